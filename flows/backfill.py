"""`backfill`: the nightly pipeline for each date of a range, oldest first, one night at a time."""

from __future__ import annotations

from datetime import date, timedelta

from prefect import flow

from flows.naming import run_name
from flows.nightly import nightly
from schemas.params import NightlyParams
from schemas.results import NightResult


@flow(name="backfill", flow_run_name=run_name("backfill"), log_prints=True)
def backfill(start: date, end: date, params: NightlyParams = NightlyParams()) -> list[NightResult]:
    """Run `nightly` for every date in [start, end]. Dates older than the live snapshot are published as
    snapshots without moving the live pointer back.

    Args:
        start: First run date (inclusive).
        end: Last run date (inclusive).
        params: Parameters for every night (its run_date is replaced by each date).
    """
    if end < start:
        raise ValueError(f"backfill range is empty: end {end} is before start {start}")
    days = (end - start).days + 1
    # Every date but the newest has the later days' events in the log: expected, not a raw-gate failure.
    return [
        nightly(params.model_copy(update={"run_date": start + timedelta(days=i), "backfill": True}))
        for i in range(days)
    ]
