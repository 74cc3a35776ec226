"""Stage flow `precompute`: Score every user with the champion models and write the top-K lists to the lake."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows import chain
from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import Precomputed
from tasks import channels, features, scoring


@flow(name="precompute", flow_run_name=run_name("precompute"), log_prints=True)
def precompute(
    params: NightlyParams = NightlyParams(), triggered_by: str | None = None
) -> Precomputed | State:
    """Score every user with the champion models and write the top-K lists to the lake.

    ``triggered_by`` is set by the chain's trigger (the previous stage's run id): a second run started by the
    same completion ends `Duplicate` and does nothing (flows/chain.py).
    """
    if repeat := chain.duplicate_of_earlier(triggered_by):
        return repeat
    params = features.latest_built_date(params)
    lists = scoring.precompute(params)
    done, failed = channels.run_each(scoring.precompute_channel, params, "precompute", needs_lists=False)
    return lists.model_copy(update={"channels": done, "failed_channels": failed})
