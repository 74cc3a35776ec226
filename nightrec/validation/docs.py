"""Data Docs and gate metrics to MLflow, so a drift or a failed gate can be read beside the models it fed."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

from nightrec import registry
from nightrec.settings import Settings


def log_gate(settings: Settings, ds: date, report) -> str:
    """Log one gate's verdict, check metrics (PSI, shares, volumes) and the run's Data Docs as an MLflow run.

    Returns:
        The MLflow run id (runs are tagged ``nightrec.kind=data-gate``, ``ds`` and ``gate``).
    """
    registry.connect(settings)
    summary = report.summary()
    metrics = {k: min(float(v), 1e9) for k, v in summary.metrics.items() if not math.isnan(float(v))}
    docs = Path(report.data_docs or "")
    folder = docs.parent if docs.suffix == ".html" else docs
    with registry.run(f"gate-{report.gate}-{ds.isoformat()}") as run_id:
        registry.log(
            tags={
                "nightrec.kind": "data-gate",
                "ds": ds.isoformat(),
                "gate": report.gate,
                "success": report.success,
            },
            metrics=metrics,
            documents={"gate_summary.json": summary.model_dump(mode="json")},
            folders={"data_docs": str(folder)} if folder.is_dir() else None,
            files={"night_report": report.night_report} if report.night_report else None,
        )
    if report.night_report:
        # Beside the candidates' metrics of the same night, where people compare models.
        evaluation = registry.latest_run_tagged({"nightrec.stage": "evaluate", "nightrec.ds": ds.isoformat()})
        if evaluation is not None:
            registry.log_file(evaluation, report.night_report, "night_report")
    return run_id
