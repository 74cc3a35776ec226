"""Training tasks: one MLflow run per model; the new version gets the `challenger` alias."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE

from nightrec.training import reuse, stages, tracking
from schemas.params import NightlyParams
from schemas.tables import RANKING_EXAMPLES, RETRIEVAL_EXAMPLES
from tasks.context import run_id, settings_for


def _report(ref: dict, s) -> dict:
    get_run_logger().info(
        "registered %s version %s (run %s): %s", ref["name"], ref["version"], ref["run_id"], ref["metrics"]
    )
    create_link_artifact(
        f"{s.mlflow_tracking_uri}#run={ref['run_id']}",
        link_text=f"MLflow run of {ref['name']} v{ref['version']}",
        key=ref["name"],
        description=f"Run `mlflow ui --backend-store-uri {s.mlflow_tracking_uri}` and open run {ref['run_id']}",
    )
    return ref


def _train_or_reuse(
    params: NightlyParams, model: str, examples: str, train, extra: Callable[[], dict] | None = None
) -> dict:
    """``extra`` adds to the reuse key; it is called once MLflow points at the configured store."""
    s = settings_for(params)
    tracking.configure_mlflow(s.mlflow_tracking_uri, s.mlflow_artifact_root, s.mlflow_experiment)
    key = reuse.reuse_key(s, params.run_date, model, examples, extra() if extra else None)
    if not params.force and (ref := reuse.find_trained(model, key)):
        get_run_logger().info(
            "%s: inputs, settings and code unchanged; reusing version %s", model, ref["version"]
        )
        return _report(ref, s)
    tags = {"nightrec.flow_run_id": run_id(), reuse.REUSE_TAG: key}
    return _report(train(s, params.run_date, tags), s)


@task(name="train-two-tower", cache_policy=NO_CACHE)
def train_retrieval(params: NightlyParams) -> dict:
    """Train the two-tower retrieval model on the run date's examples and register it (or reuse it)."""
    return _train_or_reuse(params, stages.RETRIEVAL, RETRIEVAL_EXAMPLES.name, stages.train_retrieval)


@task(name="train-deepfm", cache_policy=NO_CACHE)
def train_ranking(params: NightlyParams) -> dict:
    """Train the DeepFM ranking model on the run date's examples and register it (or reuse it).

    The ranker learns from the two-tower's candidates, so the two-tower version is part of its reuse key.
    """
    return _train_or_reuse(params, stages.RANKING, RANKING_EXAMPLES.name, stages.train_ranking, ranker_inputs)


def ranker_inputs() -> dict:
    """What the ranker learns from beyond its examples: the two-tower challenger's version.

    Read from the registry MLflow points at, so only after ``configure_mlflow``: a stage process of the
    modular shape starts unconfigured, and read earlier this was None (MLflow's default store, a stray
    ``mlflow.db`` in the working directory), so a new two-tower did not change the ranker's reuse key.
    """
    return {"two_tower": tracking.get_alias_version(stages.RETRIEVAL, "challenger")}
