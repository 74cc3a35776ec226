"""Stage flow `precompute`: Score every user with the champion models and write the top-K lists to the lake."""

from __future__ import annotations

from prefect import flow

from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import Precomputed
from tasks import channels, features, scoring


@flow(name="precompute", flow_run_name=run_name("precompute"), log_prints=True)
def precompute(params: NightlyParams = NightlyParams()) -> Precomputed:
    """Score every user with the champion models and write the top-K lists to the lake."""
    params = features.latest_built_date(params)
    lists = scoring.precompute(params)
    done, failed = channels.run_each(scoring.precompute_channel, params, "precompute", needs_lists=False)
    return lists.model_copy(update={"channels": done, "failed_channels": failed})
