"""Training is skipped only when nothing that shapes the model changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import mlflow
import torch

from nightrec import registry
from nightrec.io import lake
from nightrec.training import reuse
from schemas.results import RETRIEVAL

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
    registry.configure_mlflow(settings.mlflow_tracking_uri, settings.mlflow_artifact_root, "reuse-test")
    assert reuse.find_trained("m", "k1") is None
    v1 = _register("m", "k1")
    _register("m", "k2")
    _register("m", "k1", status="FAILED")  # a failed run never counts, even with the right key
    ref = reuse.find_trained("m", "k1")
    assert ref.version == v1 and ref.reused is True and ref.metrics["auc"] == 0.8
    assert registry.get_alias_version("m", "challenger") == v1


PROBE = """
import json
from datetime import date
from nightrec.settings import Settings
from nightrec.training import reuse
from schemas.results import RETRIEVAL


def stop(settings, ds, model, examples, extra):  # the key's inputs are what this test is about
    print(json.dumps(extra))
    raise SystemExit(0)


reuse.reuse_key = stop
reuse.train_or_reuse(Settings(), date(2026, 11, 22), "nightrec-ranking", {})
"""


def test_a_fresh_stage_process_keys_the_ranker_by_the_registered_two_tower(settings, tmp_path):
    # The modular shape runs train-ranking in its own process, where MLflow starts unconfigured.
    registry.configure_mlflow(settings.mlflow_tracking_uri, settings.mlflow_artifact_root, "reuse-test")
    version = _register("nightrec-retrieval", "k")
    registry.set_alias("nightrec-retrieval", "challenger", version)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTREC_", "MLFLOW_"))}
    env |= {"NIGHTREC_HOME": str(settings.home), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "probe.py"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"two_tower": version}
    assert not (cwd / "mlflow.db").exists(), "MLflow's default store was opened in the working directory"


def test_the_warm_source_is_the_newest_evaluated_version_of_an_earlier_night(settings):
    registry.configure_mlflow(settings.mlflow_tracking_uri, settings.mlflow_artifact_root, "warm-test")
    name = RETRIEVAL
    assert registry.latest_trained_before(name, "2026-11-22") is None
    path = lake.partition_path(settings.lake, "retrieval_examples", DS)
    path.mkdir(parents=True)
    lake.write_marker(path, "fp-1")
    on, off = settings.model_copy(deep=True), settings.model_copy(deep=True)
    off.train.warm_start = False
    first_night = reuse.key_for(on, DS, name)
    v_old, v_mid, v_twin, v_tonight = (_register(name, f"k{i}") for i in range(4))
    dates = {v_old: "2026-11-20", v_mid: "2026-11-21", v_twin: "2026-11-21", v_tonight: "2026-11-22"}
    for v, ds in dates.items():
        registry.set_version_tag(name, v, "nightrec.ds", ds)
    registry.set_version_tag(name, v_twin, registry.SERVES_FOR_TAG, v_mid)  # a serving twin: never a source
    assert registry.latest_trained_before(name, "2026-11-22") == v_mid  # not tonight's, not the twin
    assert registry.latest_trained_before(name, "2026-11-21") == v_old
    # The reuse key names the source: a night that would start from other weights does not reuse; tonight's
    # own versions are never the source, so a re-run of tonight keys the same.
    assert reuse.key_for(on, DS, name) != first_night
    assert reuse.key_for(off, DS, name) != reuse.key_for(on, DS, name)
    registry.set_version_tag(name, _register(name, "k4"), "nightrec.ds", "2026-11-22")
    assert registry.latest_trained_before(name, "2026-11-22") == v_mid
