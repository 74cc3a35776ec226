"""Training is skipped only when nothing that shapes the model changed."""

from __future__ import annotations

from datetime import date

import mlflow
import torch

from nightrec.io import lake
from nightrec.training import reuse, tracking

DS = date(2026, 11, 22)


def _register(name: str, key: str, status: str = "FINISHED") -> str:
    with mlflow.start_run(tags={reuse.REUSE_TAG: key}) as run:
        mlflow.log_metric("auc", 0.8)
        info = mlflow.pytorch.log_model(
            torch.nn.Linear(2, 1),
            name="model",
            registered_model_name=name,
            serialization_format="pickle",
            pip_requirements=["torch"],
        )
        version = str(info.registered_model_version)
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    return version


def test_key_changes_with_inputs_settings_and_extra(settings):
    path = lake.partition_path(settings.lake, "ranking_examples", DS)
    path.mkdir(parents=True)
    lake.write_marker(path, "fp-1")
    key = reuse.reuse_key(settings, DS, "m", "ranking_examples", {"two_tower": "1"})
    assert key == reuse.reuse_key(settings, DS, "m", "ranking_examples", {"two_tower": "1"})
    assert key != reuse.reuse_key(settings, DS, "m", "ranking_examples", {"two_tower": "2"})
    changed = settings.model_copy(deep=True)
    changed.train.ranking_lr *= 2
    assert key != reuse.reuse_key(changed, DS, "m", "ranking_examples", {"two_tower": "1"})
    lake.write_marker(path, "fp-2")
    assert key != reuse.reuse_key(settings, DS, "m", "ranking_examples", {"two_tower": "1"})


def test_finds_the_version_of_a_finished_run_and_makes_it_challenger(settings):
    tracking.configure_mlflow(settings.mlflow_tracking_uri, settings.mlflow_artifact_root, "reuse-test")
    assert reuse.find_trained("m", "k1") is None
    v1 = _register("m", "k1")
    _register("m", "k2")
    _register("m", "k1", status="FAILED")  # a failed run never counts, even with the right key
    ref = reuse.find_trained("m", "k1")
    assert ref["version"] == v1 and ref["reused"] is True and ref["metrics"]["auc"] == 0.8
    assert tracking.get_alias_version("m", "challenger") == v1
