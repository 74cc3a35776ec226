"""The embedded defaults for Prefect, MLflow, GX and Spark, set before any of them is imported.

One place for the CLI and for scripts (bench/) that run nights in-process the way `nightrec run` does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from nightrec.settings import Settings

EPHEMERAL_STARTUP_S = 180


def set_library_defaults(settings: Settings, verbose: bool = False) -> None:
    """Point the libraries at the deployment's home and keep them quiet (``verbose`` keeps their INFO logs).

    Every value is a default: the caller's environment wins.
    """
    Path(settings.prefect_home).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", settings.prefect_home)
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(Path(settings.prefect_home) / "results"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Prefect gives its ephemeral API 20 s to start; a cron night on a loaded box can need more than that.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_S))
    # nightrec's own INFO lines (training epochs, stage summaries) reach each run's log in the Prefect UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "nightrec")
    if not verbose:
        # Prefect's own narration (the temporary server starting and stopping) stays out of the terminal; the
        # runs' INFO logs still reach the Prefect UI (stage lines, training epochs) and the night's log file,
        # where the CLI sends what they print.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "INFO")
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "INFO")
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        # MLflow narrates every table creation and model registration at INFO; the progress lines say enough.
        logging.getLogger("mlflow").setLevel(logging.ERROR)
