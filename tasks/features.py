"""Feature tasks: Spark steps that return lake paths and counts, never DataFrames."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from pyspark.sql import functions as F

from nightrec.errors import ContractViolation
from nightrec.features import build
from nightrec.io import raw
from nightrec.io.spark import get_spark
from schemas.params import NightlyParams
from schemas.results import FeaturesBuilt
from tasks.context import settings_for


@task(name="resolve-run-date", cache_policy=NO_CACHE)
def resolve_run_date(params: NightlyParams) -> NightlyParams:
    """Fill in the run date (the day after the newest event) and the data folder.

    Events stamped later than now cannot set the date: a clock-skewed feed would otherwise move the night
    into the future and hide its bad rows from the raw gate's timestamp rule.
    """
    s = settings_for(params)
    out = params.model_copy(update={"data": params.data or s.raw_data})
    if params.run_date is None:
        try:
            events = raw.read_raw_table(get_spark(s.spark), out.data, "events")
        except ContractViolation as e:
            # The raw gate reports it, with its Data Docs, as it does every contract violation; the date is
            # only the name of that report here.
            out.run_date = datetime.now(UTC).date()
            get_run_logger().warning(
                "cannot choose a run date from unreadable events (%s); using %s", e, out.run_date
            )
            return out
        not_future = F.when(F.col("ts") <= F.current_timestamp(), F.col("ts"))
        newest = events.agg(F.max(not_future)).first()[0]
        if newest is None:
            raise ValueError(f"no events in {out.data}/events: cannot choose a run date; pass one")
        out.run_date = newest.date() + timedelta(days=1)
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
