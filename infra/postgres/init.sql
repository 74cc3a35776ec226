-- One Postgres for both servers: Prefect's database is created by the image (POSTGRES_DB), MLflow's here.
CREATE DATABASE mlflow;
