"""Stage flow `train-retrieval`: Train the two-tower retrieval model and register it as challenger."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows import chain
from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import ModelTrained
from tasks import features, training


@flow(name="train-retrieval", flow_run_name=run_name("train-retrieval"), log_prints=True)
def train_retrieval(
    params: NightlyParams = NightlyParams(), triggered_by: str | None = None
) -> ModelTrained | State:
    """Train the two-tower retrieval model and register it as challenger.

    ``triggered_by`` is set by the chain's trigger (the previous stage's run id): a second run started by the
    same completion ends `Duplicate` and does nothing (flows/chain.py).
    """
    if repeat := chain.duplicate_of_earlier(triggered_by):
        return repeat
    params = features.latest_built_date(params)
    return training.train_retrieval(params)
