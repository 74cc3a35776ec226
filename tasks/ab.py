"""A/B report: exposures of the API joined with later engagement, as a Prefect artifact and an HTML page."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from nightrec.serving import ab_report
from nightrec.settings import Settings
from schemas.params import AbReportParams
from schemas.results import AbReportWritten
from tasks.context import artifact_key


@task(name="ab-report", cache_policy=NO_CACHE)
def ab_report_task(params: AbReportParams) -> AbReportWritten:
    """Analyse one experiment and publish its headline table as an artifact naming the full report."""
    out = ab_report.run(Settings(), params.experiment, params.events, params.exposures, params.horizon_hours)
    create_markdown_artifact(
        out.markdown + f"\n\nFull report with chart: `{out.html}`",
        key=f"ab-{artifact_key(params.experiment)}",
        description=f"A/B experiment {params.experiment}",
    )
    get_run_logger().info("A/B report of %s: %s", params.experiment, out.html)
    return out
