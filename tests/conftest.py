"""Session fixtures: isolated homes for Prefect/GX/MLflow, one SparkSession, tiny generated data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before any library import: never touch ~/.prefect, never phone home.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="nightrec-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(_SESSION_HOME / "prefect" / "results")
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
for _k in [k for k in os.environ if k.startswith("NIGHTREC_")]:
    del os.environ[_k]

import pytest  # noqa: E402

from nightrec.settings import Settings, SparkSettings  # noqa: E402

# Nights run in this process keep the JVM: the suite's one Spark session serves every test after them.
TEST_SPARK = SparkSettings(
    master="local[2]",
    driver_memory="2g",
    shuffle_partitions=2,
    max_result_size="32m",
    release_after_stages=False,
)


@pytest.fixture(scope="session")
def spark():
    from nightrec.io.spark import get_spark

    s = get_spark(TEST_SPARK, app_name="nightrec-tests")
    yield s
    s.stop()


def make_settings(home: Path, **overrides) -> Settings:
    s = Settings(home=home, spark=TEST_SPARK, **overrides)
    s.train.retrieval_epochs = 2
    s.train.ranking_epochs = 1
    s.features.holdout_days = 5
    s.features.valid_days = 5
    return s


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "home")


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    """A small seeded synthetic data set (a few hundred users) shared by feature and flow tests."""
    from nightrec.data import synthetic

    out = tmp_path_factory.mktemp("raw") / "tiny"
    synthetic.generate(300, 150, 40, out, seed=3, events_per_user=40.0)
    return out


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for every flow test of the session (about 6 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def nightrec_env(tmp_path, monkeypatch):
    """Point every stage (they build Settings() from the environment) at a fresh embedded home."""
    home = tmp_path / "home"
    env = {
        "NIGHTREC_HOME": str(home),
        "NIGHTREC_SPARK__MASTER": TEST_SPARK.master,
        "NIGHTREC_SPARK__DRIVER_MEMORY": TEST_SPARK.driver_memory,
        "NIGHTREC_SPARK__SHUFFLE_PARTITIONS": str(TEST_SPARK.shuffle_partitions),
        "NIGHTREC_SPARK__MAX_RESULT_SIZE": TEST_SPARK.max_result_size,
        "NIGHTREC_SPARK__RELEASE_AFTER_STAGES": str(TEST_SPARK.release_after_stages).lower(),
        "NIGHTREC_TRAIN__RETRIEVAL_EPOCHS": "2",
        "NIGHTREC_TRAIN__RANKING_EPOCHS": "1",
        "NIGHTREC_FEATURES__HOLDOUT_DAYS": "5",
        "NIGHTREC_FEATURES__VALID_DAYS": "5",
        "NIGHTREC_SCORING__TOP_K": "10",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return home
