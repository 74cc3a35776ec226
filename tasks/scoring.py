"""Precompute: every user's top-K with the champion models, written to the lake."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from nightrec.scoring import stage
from schemas.params import NightlyParams
from schemas.results import Precomputed
from tasks.context import settings_for


@task(name="precompute-recommendations", cache_policy=NO_CACHE)
def precompute(params: NightlyParams) -> Precomputed:
    """Score all users with the champions (chunked; seen and unavailable items never returned)."""
    s = settings_for(params)
    summary = stage.precompute_with_champions(s, params.run_date, force=params.force)
    get_run_logger().info(
        "precompute (%s): %d users, %d rows, %d on fallback lists",
        "reused" if summary.skipped else "scored",
        summary.users,
        summary.rows,
        summary.fallback_users,
    )
    return summary


@task(name="precompute-channel", task_run_name="precompute-{channel}", cache_policy=NO_CACHE)
def precompute_channel(params: NightlyParams, channel: str) -> Precomputed:
    """Score all users with the policy of an extra channel (publish.channels) into that channel's lists."""
    s = settings_for(params)
    summary = stage.precompute_channel(s, params.run_date, channel, force=params.force)
    get_run_logger().info(
        "precompute channel %s (%s, %s): %d users, %d rows",
        channel,
        summary.policy.get("name"),
        "reused" if summary.skipped else "scored",
        summary.users,
        summary.rows,
    )
    return summary
