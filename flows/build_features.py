"""Stage flow `build-features`: Build point-in-time features, vocabularies, the temporal split and training examples with Spark."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows import chain
from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import FeaturesBuilt
from tasks import features


@flow(name="build-features", flow_run_name=run_name("build-features"), log_prints=True)
def build_features(
    params: NightlyParams = NightlyParams(), triggered_by: str | None = None
) -> FeaturesBuilt | State:
    """Build point-in-time features, vocabularies, the temporal split and training examples with Spark.

    ``triggered_by`` is set by the chain's trigger (the previous stage's run id): a second run started by the
    same completion ends `Duplicate` and does nothing (flows/chain.py).
    """
    if repeat := chain.duplicate_of_earlier(triggered_by):
        return repeat
    params = features.resolve_run_date(params)
    return features.build_features(params)
