"""Stage flow `validate-features`: Validate every feature table with Great Expectations."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows import chain
from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import GateSummary
from tasks import features, validation


@flow(name="validate-features", flow_run_name=run_name("validate-features"), log_prints=True)
def validate_features(
    params: NightlyParams = NightlyParams(), triggered_by: str | None = None
) -> GateSummary | State:
    """Validate every feature table with Great Expectations.

    ``triggered_by`` is set by the chain's trigger (the previous stage's run id): a second run started by the
    same completion ends `Duplicate` and does nothing (flows/chain.py).
    """
    if repeat := chain.duplicate_of_earlier(triggered_by):
        return repeat
    params = features.latest_built_date(params)
    return validation.validate_features(params)
