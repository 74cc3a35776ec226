"""Feature tasks: Spark steps that return lake paths and counts, never DataFrames."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from nightrec.errors import ContractViolation
from nightrec.features import build, run_date
from nightrec.io import spark
from nightrec.io.spark import get_spark
from schemas.params import NightlyParams
from schemas.results import FeaturesBuilt
from tasks.context import record_params, settings_for


@task(name="resolve-run-date", cache_policy=NO_CACHE)
def resolve_run_date(params: NightlyParams) -> NightlyParams:
    """Fill in the data folder and, when not given, the run date from the raw events (the Spark stages).

    The resolved parameters are recorded on the flow run, so the modular chain's trigger hands the next stage
    a date and no later stage starts a JVM to choose it again.
    """
    s = settings_for(params)
    out = params.model_copy(update={"data": params.data or s.raw_data})
    if params.run_date is None:
        try:
            out.run_date = run_date.from_events(get_spark(s.spark), out.data)
        except ContractViolation as e:
            # The raw gate reports it, with its Data Docs, as it does every contract violation; the date is
            # only the name of that report here.
            out.run_date = datetime.now(UTC).date()
            get_run_logger().warning(
                "cannot choose a run date from unreadable events (%s); using %s", e, out.run_date
            )
    if out != params:
        record_params(out)
    return out


@task(name="latest-built-date", cache_policy=NO_CACHE)
def latest_built_date(params: NightlyParams) -> NightlyParams:
    """Fill in the run date of a stage after the feature build: the newest night with complete features."""
    if params.run_date is not None:
        return params
    out = params.model_copy(update={"run_date": run_date.from_lake(settings_for(params).lake)})
    get_run_logger().info("no run date given: %s is the newest night with complete features", out.run_date)
    record_params(out)
    return out


@task(name="build-feature-tables", cache_policy=NO_CACHE)
def build_features(params: NightlyParams) -> FeaturesBuilt:
    """All feature tables of the run date (skipped when the inputs' fingerprint matches the markers)."""
    s = settings_for(params)
    summary = build.build_features(
        get_spark(s.spark), s.raw_data, s.lake, params.run_date, s.features, params.force
    )
    log = get_run_logger()
    log.info(
        "features %s (fingerprint %s): %s",
        "skipped" if summary.skipped else "built",
        summary.fingerprint,
        summary.rows,
    )
    create_table_artifact(
        [{"table": k, "rows": v} for k, v in summary.rows.items()],
        key="feature-tables",
        description=f"Feature tables for {params.run_date} ({'reused' if summary.skipped else 'built'})",
    )
    return summary


@task(name="release-spark", cache_policy=NO_CACHE)
def release_spark(params: NightlyParams) -> bool:
    """End the process's Spark driver JVM once the night's Spark stages are done (its heap returns to the
    machine for training and scoring); kept where scoring runs on Spark (``scoring.engine``)."""
    s = settings_for(params)
    if s.spark.remote or s.scoring.engine == "spark" or not s.spark.release_after_stages:
        return False
    released = spark.release()
    if released:
        get_run_logger().info("Spark stages done: the driver JVM ended (its memory returned)")
    return released
