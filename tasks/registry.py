"""Evaluation and promotion: challenger vs champion vs baselines on the held-out window."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from nightrec.evaluation import promotion
from schemas.params import NightlyParams
from schemas.results import ModelTrained, Promotion
from tasks.context import run_id, settings_for


@task(name="evaluate-and-promote-models", cache_policy=NO_CACHE)
def evaluate_and_promote(
    params: NightlyParams, retrieval: ModelTrained | None, ranking: ModelTrained | None
) -> Promotion:
    """Score the held-out window with every candidate; move `champion` only on a win."""
    s = settings_for(params)
    result = promotion.evaluate_and_promote(
        s, params.run_date, retrieval, ranking, {"nightrec.flow_run_id": run_id()}
    )
    rows = [
        {"candidate": name, **{k: round(v, 4) for k, v in m.items()}} for name, m in result.metrics.items()
    ]
    create_table_artifact(
        rows, key="offline-metrics", description=f"Held-out metrics, {params.run_date}: {result.reason}"
    )
    get_run_logger().info("promotion: %s (%s)", result.promoted, result.reason)
    return result
