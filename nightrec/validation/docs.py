"""Data Docs and gate metrics to MLflow, so a drift or a failed gate can be read beside the models it fed."""

from __future__ import annotations

import math
from datetime import date

from nightrec import registry
from nightrec.ops import links
from nightrec.settings import Settings


def log_gate(settings: Settings, ds: date, report) -> str:
    """Log one gate's verdict, check metrics (PSI, shares, volumes) and the run's Data Docs as an MLflow run.

    Returns:
        The MLflow run id (runs are tagged ``nightrec.kind=data-gate``, ``ds`` and ``gate``).
    """
    registry.connect(settings)
    summary = report.summary()
    metrics = {k: min(float(v), 1e9) for k, v in summary.metrics.items() if not math.isnan(float(v))}
    # The Data Docs are a site of linked pages, which MLflow's sandboxed artifact viewer cannot render: the
    # run links to them where `nightrec pages` serves them instead of copying them in.
    note = f"Gate **{report.gate}** for {ds}: {'passed' if report.success else 'FAILED'}."
    if report.data_docs:
        try:
            note += f" [Data Docs]({links.data_docs(settings, report.data_docs)})"
        except ValueError:
            note += f" Data Docs: `{report.data_docs}`"
    with registry.run(f"gate-{report.gate}", ds=ds.isoformat(), note=note) as run_id:
        registry.log(
            tags={
                "nightrec.kind": "data-gate",
                "ds": ds.isoformat(),
                "gate": report.gate,
                "success": report.success,
            },
            metrics=metrics,
            documents={"gate_summary.json": summary.model_dump(mode="json")},
            files={"night_report": report.night_report} if report.night_report else None,
        )
    if report.night_report:
        # Beside the candidates' metrics of the same night, where people compare models.
        evaluation = registry.latest_run_tagged({"nightrec.stage": "evaluate", "nightrec.ds": ds.isoformat()})
        if evaluation is not None:
            registry.log_file(evaluation, report.night_report, "night_report")
    return run_id
