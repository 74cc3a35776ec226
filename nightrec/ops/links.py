"""URLs a browser opens for what a night made: MLflow runs and model versions, Data Docs, night reports.

Every link is http(s): MLflow's UI at ``ui.mlflow_url`` (the tracking server itself, or the UI `nightrec serve`
starts beside a SQLite store) and the Data Docs and night reports at ``ui.pages_url`` (`nightrec pages`).
A ``sqlite:///`` or ``file://`` link opens nothing in a browser, so none is ever made.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from urllib.parse import quote

from nightrec.settings import Settings

DATA_DOCS = "data-docs"
REPORTS = "reports"


# MLflow 3's UI opens an experiment in GenAI mode (traces, prompts) unless the link asks for model training;
# the experiment's own kind tag is not consulted by the 3.x UI.
ML_VIEW = "?workflowType=machine_learning"


def mlflow_run(settings: Settings, experiment_id: str, run_id: str) -> str:
    return f"{settings.ui.mlflow_url}/#/experiments/{experiment_id}/runs/{run_id}{ML_VIEW}"


def mlflow_experiment(settings: Settings, experiment_id: str) -> str:
    return f"{settings.ui.mlflow_url}/#/experiments/{experiment_id}{ML_VIEW}"


def mlflow_model_version(settings: Settings, name: str, version: str | int) -> str:
    return f"{settings.ui.mlflow_url}/#/models/{quote(name)}/versions/{version}"


def data_docs(settings: Settings, path: str | Path) -> str:
    """The URL of a file under the Data Docs folder (``settings.data_docs``), as `nightrec pages` serves it.

    Raises:
        ValueError: ``path`` is not under the Data Docs folder.
    """
    rel = Path(path).resolve().relative_to(Path(settings.data_docs).resolve())
    return f"{settings.ui.pages_url}/{DATA_DOCS}/{quote(rel.as_posix(), safe='/=')}"


def night_report(settings: Settings, ds: date, channel: str | None = None) -> str:
    tail = f"?channel={quote(channel)}" if channel and channel != "default" else ""
    return f"{settings.ui.pages_url}/{REPORTS}/{ds.isoformat()}{tail}"
