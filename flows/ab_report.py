"""Flow `ab-report`: what an online A/B experiment of `nightrec api` measured (CTR, conversion, NDCG, SRM)."""

from __future__ import annotations

from prefect import flow

from schemas.params import AbReportParams
from schemas.results import AbReportWritten
from tasks.ab import ab_report_task


@flow(name="ab-report", flow_run_name="ab-report-{params.experiment}", log_prints=True)
def ab_report(params: AbReportParams) -> AbReportWritten:
    """Join the API's exposure log with the engagement events that followed (raw events contract)."""
    return ab_report_task(params)
