"""Stage flow `validate-recs`: Validate the final lists: exactly K, no duplicates, nothing seen or unavailable."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows import chain
from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import GateSummary
from tasks import channels, features, validation


@flow(name="validate-recs", flow_run_name=run_name("validate-recs"), log_prints=True)
def validate_recs(
    params: NightlyParams = NightlyParams(), triggered_by: str | None = None
) -> GateSummary | State:
    """Validate the final lists: exactly K, no duplicates, nothing seen or unavailable.

    ``triggered_by`` is set by the chain's trigger (the previous stage's run id): a second run started by the
    same completion ends `Duplicate` and does nothing (flows/chain.py).
    """
    if repeat := chain.duplicate_of_earlier(triggered_by):
        return repeat
    params = features.latest_built_date(params)
    verdict = validation.validate_recs(params)  # a failure stops the night: the default lists are refused
    done, failed = channels.run_each(validation.validate_recs_channel, params, "validate-recs")
    return verdict.model_copy(update={"channels": done, "failed_channels": failed})
