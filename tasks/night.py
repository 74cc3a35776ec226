"""The parent run's own artifacts: the whole night on one page, whether it published or stopped."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from nightrec import registry
from nightrec.ops import links, night_summary
from nightrec.settings import Settings
from schemas.params import NightlyParams
from schemas.results import NightResult
from tasks.context import settings_for


def _experiment_id(settings: Settings) -> str | None:
    try:
        return registry.connect(settings)
    except Exception as e:  # noqa: BLE001 - a tracking outage leaves the page without MLflow links, not absent
        get_run_logger().warning("MLflow unreachable, the night summary has no MLflow links: %s", e)
        return None


@task(name="night-summary", cache_policy=NO_CACHE)
def summarize(params: NightlyParams, result: NightResult) -> None:
    """The night summary, gate results, held-out metrics and links, as artifacts of the parent run."""
    s = settings_for(params)
    exp = _experiment_id(s)
    create_markdown_artifact(
        night_summary.markdown(s, result, exp),
        key="night",
        description=f"Night {result.run_date}: every stage, what went live and why",
    )
    if result.validate_recs and result.validate_recs.report:
        create_link_artifact(
            links.night_report(s, params.run_date),
            link_text=f"Night report {result.run_date}",
            key="night-report-page",
            description="Tonight's lists against the live ones, with charts",
        )
    if exp and result.evaluate_and_promote and result.evaluate_and_promote.run_id:
        create_link_artifact(
            links.mlflow_run(s, exp, result.evaluate_and_promote.run_id),
            link_text=f"MLflow evaluation {result.run_date}",
            key="mlflow-evaluation",
            description="Every candidate's held-out metrics and the decision",
        )


@task(name="night-failed", cache_policy=NO_CACHE)
def failed(
    params: NightlyParams, stage: str, reason: str, result: NightResult, data_docs: str | None = None
) -> None:
    """A stopped night's page on the parent run: which stage, why, what did run, the failed gate's docs."""
    s = settings_for(params)
    create_markdown_artifact(
        night_summary.markdown(s, result, _experiment_id(s), failed=(stage, reason), failed_docs=data_docs),
        key="night",
        description=f"Night {result.run_date}: failed at {stage}",
    )
