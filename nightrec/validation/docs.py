"""Data Docs and gate metrics to MLflow, so a drift or a failed gate can be read beside the models it fed."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import mlflow

from nightrec.settings import Settings
from nightrec.training import tracking


def log_gate(settings: Settings, ds: date, report) -> str:
    """Log one gate's verdict, check metrics (PSI, shares, volumes) and the run's Data Docs as an MLflow run.

    Returns:
        The MLflow run id (runs are tagged ``nightrec.kind=data-gate``, ``ds`` and ``gate``).
    """
    tracking.configure_mlflow(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow_experiment
    )
    summary = report.summary()
    metrics = {k: min(float(v), 1e9) for k, v in summary.metrics.items() if not math.isnan(float(v))}
    with mlflow.start_run(run_name=f"gate-{report.gate}-{ds.isoformat()}") as run:
        mlflow.set_tags(
            {
                "nightrec.kind": "data-gate",
                "ds": ds.isoformat(),
                "gate": report.gate,
                "success": report.success,
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.log_dict(summary.model_dump(mode="json"), "gate_summary.json")
        docs = Path(report.data_docs or "")
        folder = docs.parent if docs.suffix == ".html" else docs
        if folder.is_dir():
            mlflow.log_artifacts(str(folder), artifact_path="data_docs")
    return run.info.run_id
