"""Stage flow `train-retrieval`: Train the two-tower retrieval model and register it as challenger."""

from __future__ import annotations

from prefect import flow

from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import ModelTrained
from tasks import features, training


@flow(name="train-retrieval", flow_run_name=run_name("train-retrieval"), log_prints=True)
def train_retrieval(params: NightlyParams = NightlyParams()) -> ModelTrained:
    """Train the two-tower retrieval model and register it as challenger."""
    params = features.latest_built_date(params)
    return training.train_retrieval(params)
