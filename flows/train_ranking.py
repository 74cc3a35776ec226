"""Stage flow `train-ranking`: Train the DeepFM ranking model and register it as challenger."""

from __future__ import annotations

from prefect import flow

from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import ModelTrained
from tasks import features, training


@flow(name="train-ranking", flow_run_name=run_name("train-ranking"), log_prints=True)
def train_ranking(params: NightlyParams = NightlyParams()) -> ModelTrained:
    """Train the DeepFM ranking model and register it as challenger."""
    params = features.latest_built_date(params)
    return training.train_ranking(params)
