"""Stage flow `build-features`: Build point-in-time features, vocabularies, the temporal split and training examples with Spark."""

from __future__ import annotations

from prefect import flow

from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import FeaturesBuilt
from tasks import features


@flow(name="build-features", flow_run_name=run_name("build-features"), log_prints=True)
def build_features(params: NightlyParams = NightlyParams()) -> FeaturesBuilt:
    """Build point-in-time features, vocabularies, the temporal split and training examples with Spark."""
    params = features.resolve_run_date(params)
    return features.build_features(params)
