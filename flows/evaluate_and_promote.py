"""Stage flow `evaluate-and-promote`: full-list metrics on the held-out window; champion moves only on a win."""

from __future__ import annotations

from prefect import flow
from prefect.states import State

from flows import chain
from flows.naming import run_name
from schemas.params import NightlyParams
from schemas.results import ModelTrained, Promotion
from tasks import features, registry


@flow(name="evaluate-and-promote", flow_run_name=run_name("evaluate-and-promote"), log_prints=True)
def evaluate_and_promote(
    params: NightlyParams = NightlyParams(),
    retrieval: ModelTrained | None = None,
    ranking: ModelTrained | None = None,
    triggered_by: str | None = None,
) -> Promotion | State:
    """Evaluate challenger, champion and baselines on the held-out window; promote the challenger on a win.

    Without model references (a separate deployment), the registry's `challenger` aliases are evaluated.

    ``triggered_by`` is set by the chain's trigger (the previous stage's run id): a second run started by the
    same completion ends `Duplicate` and does nothing (flows/chain.py).
    """
    if repeat := chain.duplicate_of_earlier(triggered_by):
        return repeat
    params = features.latest_built_date(params)
    return registry.evaluate_and_promote(params, retrieval, ranking)
