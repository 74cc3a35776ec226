"""Gate tasks: run a suite, publish the report as an artifact, raise GateFailed when it fails."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from filelock import FileLock
from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from nightrec.evaluation import night_report
from nightrec.io.spark import get_spark
from nightrec.settings import Settings, for_channel
from nightrec.validation import docs, gates
from nightrec.validation.gates import GateReport
from schemas.manifest import DEFAULT_CHANNEL
from schemas.params import NightlyParams
from schemas.results import GateSummary
from tasks.context import artifact_key, settings_for


def _markdown(report: GateReport, ds: date) -> str:
    lines = [f"## Gate `{report.gate}` for {ds}: {'passed' if report.success else '**FAILED**'}", ""]
    lines += ["| suite | success | expectations | failed |", "| --- | --- | --- | --- |"]
    for r in report.results:
        st = r.statistics
        lines.append(
            f"| {r.suite} | {r.success} | {st.get('evaluated_expectations')} | {st.get('unsuccessful_expectations')} |"
        )
        for f in r.failures[:10]:
            lines.append(
                f"| ↳ {f.rule} | `{f.column}` {f.file or ''} | {f.count} "
                f"| {json.dumps(f.rows, default=str)[:200]} |"
            )
    for title, items in (
        ("Warnings", [f"{w.rule}: {w.detail}" for w in report.warnings]),
        ("Notes", report.notes),
    ):
        if items:
            lines += ["", f"### {title}", *[f"- {i}" for i in items]]
    if report.data_docs:
        lines += ["", f"Data Docs: `{report.data_docs}`"]
    return "\n".join(lines)


def night_report_markdown(stats: dict, path: str) -> str:
    """The night report's headline figures, and where the whole page is."""
    figures = stats.get("lists") or {}
    rows = [
        (label, fmt.format(figures[key]))
        for key, label, fmt in (*night_report.HEADLINE, *night_report.CHURN)
        if key in figures
    ]
    lines = [
        f"## Night report: lists made by `{stats.get('policy')}`",
        "",
        "| figure | tonight |",
        "| --- | --- |",
    ]
    lines += [f"| {label} | {value} |" for label, value in rows]
    lines += ["", f"Compared with `{stats.get('compared_with') or 'nothing live'}`.", "", f"Report: `{path}`"]
    return "\n".join(lines)


@contextmanager
def _one_gate_at_a_time(settings: Settings) -> Iterator[None]:
    """Hold the GX project of this home for one gate. Every gate rewrites the same file stores (suites,
    validation definitions, checkpoints) and points the Data Docs site in great_expectations.yml at its own run
    date, so two nights on one home would pull them from under each other ("ExpectationSuite 'interactions' not
    found"; RELIABILITY.md scenario 17)."""
    Path(settings.gx_root).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(settings.gx_root) / ".gate.lock")):
        yield


def _publish(report: GateReport, ds: date, settings: Settings) -> GateSummary:
    gate = artifact_key(report.gate)
    create_markdown_artifact(
        _markdown(report, ds), key=f"gate-{gate}", description=f"{report.gate} gate, {ds}"
    )
    if report.data_docs:
        create_link_artifact(
            Path(report.data_docs).resolve().as_uri(), link_text=f"Data Docs ({report.gate}, {ds})",
            key=f"data-docs-{gate}",
        )  # fmt: skip
    if report.night_report:
        channel = "" if settings.channel == DEFAULT_CHANNEL else f"-{artifact_key(settings.channel)}"
        create_markdown_artifact(
            night_report_markdown(report.stats, report.night_report),
            key=f"night-report{channel}",
            description=f"Night report, {ds}: tonight's lists against the live ones",
        )
    log = get_run_logger()
    run_id = None
    try:
        run_id = docs.log_gate(settings, ds, report)
        log.info("gate %s logged to MLflow run %s", report.gate, run_id)
    except Exception as e:  # noqa: BLE001 - a tracking outage must not hide the gate's own verdict
        log.warning("could not log gate %s to MLflow: %s", report.gate, e)
    for w in report.warnings:
        log.warning("gate %s warning: %s: %s", report.gate, w.rule, w.detail)
    log.info("gate %s: %s (Data Docs: %s)", report.gate, report.success, report.data_docs)
    report.raise_if_failed()
    return report.summary().model_copy(update={"mlflow_run_id": run_id})


@task(name="validate-raw-data", cache_policy=NO_CACHE)
def validate_raw(params: NightlyParams) -> GateSummary:
    """Great Expectations on the raw events, items and users."""
    s = settings_for(params)
    with _one_gate_at_a_time(s):
        report = gates.validate_raw(get_spark(s.spark), s.raw_data, s, params.run_date, params.backfill)
    return _publish(report, params.run_date, s)


@task(name="validate-feature-tables", cache_policy=NO_CACHE)
def validate_features(params: NightlyParams) -> GateSummary:
    """Great Expectations on every feature table of the run date."""
    s = settings_for(params)
    with _one_gate_at_a_time(s):
        report = gates.validate_features(get_spark(s.spark), s, params.run_date)
    return _publish(report, params.run_date, s)


@task(name="validate-recommendations", cache_policy=NO_CACHE)
def validate_recs(params: NightlyParams) -> GateSummary:
    """Great Expectations on the final lists and their per-user audit."""
    s = settings_for(params)
    with _one_gate_at_a_time(s):
        report = gates.validate_recs(s, params.run_date)
    return _publish(report, params.run_date, s)


@task(
    name="validate-channel-recommendations",
    task_run_name="validate-recs-{channel}",
    cache_policy=NO_CACHE,
)
def validate_recs_channel(params: NightlyParams, channel: str) -> GateSummary:
    """The recs gate on an extra channel's lists (publish.channels), against that channel's live lists."""
    s = for_channel(settings_for(params), channel)
    with _one_gate_at_a_time(s):
        report = gates.validate_recs(s, params.run_date)
    return _publish(report, params.run_date, s)
