"""Training tasks: one MLflow run per model; the new version gets the `challenger` alias."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_link_artifact
from prefect.cache_policies import NO_CACHE

from nightrec.training import stages
from schemas.params import NightlyParams
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


@task(name="train-two-tower", cache_policy=NO_CACHE)
def train_retrieval(params: NightlyParams) -> dict:
    """Train the two-tower retrieval model on the run date's examples and register it."""
    s = settings_for(params)
    return _report(stages.train_retrieval(s, params.run_date, {"nightrec.flow_run_id": run_id()}), s)


@task(name="train-deepfm", cache_policy=NO_CACHE)
def train_ranking(params: NightlyParams) -> dict:
    """Train the DeepFM ranking model on the run date's examples and register it."""
    s = settings_for(params)
    return _report(stages.train_ranking(s, params.run_date, {"nightrec.flow_run_id": run_id()}), s)
