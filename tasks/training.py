"""Training tasks: one MLflow run per model; the new version gets the `challenger` alias (or is reused)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE

from nightrec import registry
from nightrec.ops import links
from nightrec.training import reuse, stages
from schemas.params import NightlyParams
from schemas.results import ModelTrained
from tasks.context import run_id, settings_for

# The figures a person reads in the run's log; the rest is in the MLflow run.
_HEADLINE = ("best_epoch", "epochs_run", "recall_at_50", "auc", "valid_loss", "logloss", "train_loss")


def _train(params: NightlyParams, model_name: str) -> ModelTrained:
    s = settings_for(params)
    ref = reuse.train_or_reuse(
        s, params.run_date, model_name, {"nightrec.flow_run_id": run_id()}, force=params.force
    )
    shown = {k: v for k, v in ref.metrics.items() if k in _HEADLINE}
    get_run_logger().info(
        "%s %s version %s (MLflow run %s): %s",
        "reused" if ref.reused else "registered",
        ref.name,
        ref.version,
        ref.run_id,
        ", ".join(f"{k} {v:.4g}" for k, v in shown.items()) or "no validation figures",
    )
    create_link_artifact(
        links.mlflow_run(s, registry.connect(s), ref.run_id),
        link_text=f"MLflow run of {ref.name} v{ref.version}",
        key=ref.name,
        description=f"Curves, params and the registered version of {ref.name}",
    )
    return ref


@task(name="train-two-tower", cache_policy=NO_CACHE)
def train_retrieval(params: NightlyParams) -> ModelTrained:
    """Train the two-tower retrieval model on the run date's examples and register it (or reuse it)."""
    return _train(params, stages.RETRIEVAL)


@task(name="train-deepfm", cache_policy=NO_CACHE)
def train_ranking(params: NightlyParams) -> ModelTrained:
    """Train the DeepFM ranking model on the run date's examples and register it (or reuse it).

    The ranker learns from the two-tower's candidates, so the two-tower version is part of its reuse key.
    """
    return _train(params, stages.RANKING)
