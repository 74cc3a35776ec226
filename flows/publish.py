"""Stage flow `publish`: versioned snapshot + manifest, then the atomic flip of the live pointer."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows import chain
from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import Promotion, Publication
from tasks import channels, features
from tasks import publish as publish_tasks


@flow(name="publish", flow_run_name=run_name("publish"), log_prints=True)
def publish(
    params: NightlyParams = NightlyParams(),
    promotion: Promotion | None = None,
    triggered_by: str | None = None,
) -> Publication | State:
    """Publish the validated lists of the run date; refuses lists that did not pass validate-recs.

    ``triggered_by`` is set by the chain's trigger (the previous stage's run id): a second run started by the
    same completion ends `Duplicate` and does nothing (flows/chain.py).
    """
    if repeat := chain.duplicate_of_earlier(triggered_by):
        return repeat
    params = features.latest_built_date(params)
    out = publish_tasks.publish(params, promotion)
    done, failed = channels.run_each(publish_tasks.publish_channel, params, "publish")
    return out.model_copy(update={"channels": done, "failed_channels": failed})
