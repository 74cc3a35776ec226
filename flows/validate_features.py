"""Stage flow `validate-features`: Validate every feature table with Great Expectations."""

from __future__ import annotations

from prefect import flow

from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import GateSummary
from tasks import features, validation


@flow(name="validate-features", flow_run_name=run_name("validate-features"), log_prints=True)
def validate_features(params: NightlyParams = NightlyParams()) -> GateSummary:
    """Validate every feature table with Great Expectations."""
    params = features.latest_built_date(params)
    return validation.validate_features(params)
