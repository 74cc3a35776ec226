"""Publish: snapshot + manifest to the object store, then the conditional flip of the live pointer."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from nightrec.publish import diff, stage
from nightrec.settings import for_channel
from schemas.params import NightlyParams
from schemas.results import Promotion, Publication
from tasks.context import run_id, settings_for


@task(name="publish-snapshot", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def publish(params: NightlyParams, promotion: Promotion | None) -> Publication:
    """Write the versioned snapshot and make it live with one atomic pointer flip."""
    s = settings_for(params)
    out = stage.publish_recs(s, params.run_date, run_id(), promotion)
    get_run_logger().info("published %s (live pointer %s)", out.manifest_key, out.pointer_key)
    create_markdown_artifact(
        diff.night_summary_markdown(out, promotion),
        key="night-summary",
        description=f"What went live for {params.run_date} and what changed",
    )
    return out


@task(
    name="publish-channel",
    task_run_name="publish-{channel}",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=5,
)
def publish_channel(params: NightlyParams, channel: str) -> Publication:
    """Publish an extra channel's validated lists under its own prefix and flip its own live pointer."""
    s = for_channel(settings_for(params), channel)
    out = stage.publish_recs(s, params.run_date, run_id(), None)
    get_run_logger().info("channel %s: published %s (live: %s)", channel, out.manifest_key, out.live)
    return out
