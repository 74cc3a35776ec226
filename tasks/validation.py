"""Gate tasks: run a suite, publish the report as an artifact, raise GateFailed when it fails."""

from __future__ import annotations

import json
from datetime import date

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from nightrec.io.spark import get_spark
from nightrec.validation import gates
from nightrec.validation.gates import GateReport
from schemas.params import NightlyParams
from tasks.context import settings_for


def _publish(report: GateReport, ds: date) -> dict:
    lines = [f"## Gate `{report.gate}` for {ds}: {'passed' if report.success else '**FAILED**'}", ""]
    lines += ["| suite | success | expectations | failed |", "| --- | --- | --- | --- |"]
    for r in report.results:
        st = r.statistics
        lines.append(
            f"| {r.suite} | {r.success} | {st.get('evaluated_expectations')} | {st.get('unsuccessful_expectations')} |"
        )
        for f in r.failures[:10]:
            lines.append(
                f"| ↳ {f['rule']} | `{f.get('column')}` | {f.get('count')} | {json.dumps(f.get('rows'), default=str)[:200]} |"
            )
    if report.data_docs:
        lines += ["", f"Data Docs: `{report.data_docs}`"]
    create_markdown_artifact(
        "\n".join(lines), key=f"gate-{report.gate}", description=f"{report.gate} gate, {ds}"
    )
    get_run_logger().info("gate %s: %s (Data Docs: %s)", report.gate, report.success, report.data_docs)
    report.raise_if_failed()
    return report.summary()


@task(name="validate-raw-data", cache_policy=NO_CACHE)
def validate_raw(params: NightlyParams) -> dict:
    """Great Expectations on the raw events, items and users."""
    s = settings_for(params)
    return _publish(gates.validate_raw(get_spark(s.spark), s.raw_data, s), params.run_date)


@task(name="validate-feature-tables", cache_policy=NO_CACHE)
def validate_features(params: NightlyParams) -> dict:
    """Great Expectations on every feature table of the run date."""
    s = settings_for(params)
    return _publish(gates.validate_features(get_spark(s.spark), s, params.run_date), params.run_date)


@task(name="validate-recommendations", cache_policy=NO_CACHE)
def validate_recs(params: NightlyParams) -> dict:
    """Great Expectations on the final lists and their per-user audit."""
    s = settings_for(params)
    return _publish(gates.validate_recs(s, params.run_date), params.run_date)
