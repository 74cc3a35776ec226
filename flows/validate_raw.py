"""Stage flow `validate-raw`: Validate the raw events, items and users with Great Expectations; stop the run on failure."""

from __future__ import annotations

from prefect import flow

from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import GateSummary
from tasks import features, validation


@flow(name="validate-raw", flow_run_name=run_name("validate-raw"), log_prints=True)
def validate_raw(params: NightlyParams = NightlyParams()) -> GateSummary:
    """Validate the raw events, items and users with Great Expectations; stop the run on failure."""
    params = features.resolve_run_date(params)
    return validation.validate_raw(params)
