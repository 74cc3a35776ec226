"""Operating the pipeline on one machine: a local Prefect server, workers and the deployments of prefect.yaml."""
