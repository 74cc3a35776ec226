"""MLflow tracking on a temporary sqlite store: run contents, registry, aliases, round-trip, FAILED runs."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from nightrec import registry
from nightrec.models.configs import TwoTowerConfig
from nightrec.models.two_tower import TwoTower
from nightrec.training.loop import TrainingDiverged, TrainResult

NAME = "nightrec-retrieval"
CFG = TwoTowerConfig(n_users=10, n_items=12, n_categories=3, n_segments=2, dim=8, history_len=4, hidden=(16,))


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    previous = mlflow.get_tracking_uri()
    exp_id = registry.configure_mlflow(
        f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "artifacts").as_uri(), "test"
    )
    yield exp_id
    mlflow.set_tracking_uri(previous)


def _result() -> TrainResult:
    torch.manual_seed(0)
    history = [
        {"epoch": 1, "train_loss": 2.0, "valid_loss": 2.2, "recall_at_50": 0.3, "samples_per_s": 100.0},
        {"epoch": 2, "train_loss": 1.5, "valid_loss": 1.9, "recall_at_50": 0.4, "samples_per_s": 110.0},
        {
            "epoch": 3,
            "train_loss": 1.2,
            "valid_loss": float("nan"),
            "recall_at_50": 0.35,
            "samples_per_s": 120.0,
        },
    ]
    metrics = {**{k: v for k, v in history[1].items() if k != "epoch"}, "best_epoch": 2, "epochs_run": 3}
    return TrainResult(model=TwoTower(CFG).eval(), history=history, best_epoch=2, metrics=metrics)


def _example() -> np.ndarray:
    return np.array([[1, 1, 3, 4, 0, 0], [2, 0, 0, 0, 0, 0], [11, 1, 5, 0, 0, 0]], dtype=np.int64)


def _log(result: TrainResult) -> registry.ModelRef:
    return registry.log_training_run(
        result,
        model_name=NAME,
        params={"dim": 8, "lr": 0.01},
        dataset_sources={"train": "/lake/retrieval_examples/ds=2026-11-20", "valid": "/lake/x"},
        fingerprints={"train": "abc123"},
        tags={"nightrec.ds": "2026-11-20"},
        input_example=_example(),
        input_columns=["user_idx", "segment_idx", "history_0", "history_1", "history_2", "history_3"],
        log_system_metrics=False,
    )


def test_configure_mlflow_is_idempotent(store, tmp_path):
    assert registry.configure_mlflow(f"sqlite:///{tmp_path}/mlflow.db", "file:///unused", "test") == store
    assert mlflow.get_experiment(store).artifact_location == (tmp_path / "artifacts").as_uri()


def test_a_training_run_is_logged_registered_and_marked_challenger(store):
    ref = _log(_result())
    client = MlflowClient()
    run = client.get_run(ref.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"dim": "8", "lr": "0.01"}
    assert run.data.tags["fingerprint.train"] == "abc123" and run.data.tags["nightrec.ds"] == "2026-11-20"
    assert run.data.tags["nightrec.code_version"]
    curve = client.get_metric_history(ref.run_id, "recall_at_50")
    assert [(m.step, m.value) for m in sorted(curve, key=lambda m: m.step)] == [(1, 0.3), (2, 0.4), (3, 0.35)]
    assert len(client.get_metric_history(ref.run_id, "valid_loss")) == 2  # the NaN epoch is skipped
    assert run.data.metrics["best_recall_at_50"] == 0.4 and run.data.metrics["best_epoch"] == 2
    assert "learning_curve.png" in {a.path for a in client.list_artifacts(ref.run_id)}
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"train", "valid"}
    assert ref.version == "1" and registry.get_alias_version(NAME, "challenger") == "1"
    # The version says when it was trained and how it did; its signature names what each input column holds.
    mv = client.get_model_version(NAME, ref.version)
    assert mv.tags["nightrec.ds"] == "2026-11-20" and mv.tags["best_epoch"] == "2"
    assert mv.tags["valid_recall_at_50"] == "0.4000"
    assert "Trained for run date 2026-11-20" in mv.description and "best epoch 2 of 3" in mv.description
    signature = mlflow.models.get_model_info(f"models:/{NAME}/{ref.version}").signature
    assert signature.inputs.input_names() == ["user_idx, segment_idx, history_0..history_3"]
    assert signature.outputs.input_names() == ["user_vector"]
    # The git commit of the code, in MLflow's own tag (blank outside a checkout).
    assert run.data.tags.get("mlflow.source.git.commit", "") == (registry._git_commit(ROOT) or "")


def test_load_model_round_trip_keeps_the_towers(store):
    result = _result()
    ref = _log(result)
    loaded = registry.load_model(NAME, "challenger")
    assert loaded is not None
    model, version, run_id = loaded
    assert (version, run_id) == (ref.version, ref.run_id)
    user, seg, hist = torch.tensor([1, 2, 50]), torch.tensor([1, 0, 1]), torch.tensor([[3, 4, 0, 0]] * 3)
    items, cats = torch.arange(15), torch.arange(15) % 3  # 12..14 are newer than the model
    with torch.no_grad():
        torch.testing.assert_close(
            model.user_vectors(user, seg, hist), result.model.user_vectors(user, seg, hist)
        )
        torch.testing.assert_close(model.item_vectors(items, cats), result.model.item_vectors(items, cats))


def test_aliases_move_and_missing_ones_read_as_none(store):
    assert registry.load_model(NAME, "champion") is None  # no such model yet
    assert registry.get_alias_version(NAME, "champion") is None
    _log(_result())
    second = _log(_result())
    assert second.version == "2" and registry.get_alias_version(NAME, "challenger") == "2"
    assert registry.get_alias_version(NAME, "champion") is None  # model exists, alias does not
    registry.set_alias(NAME, "champion", 1)
    assert registry.get_alias_version(NAME, "champion") == "1"
    assert registry.load_model(NAME, "champion")[1] == "1"


def test_a_failed_training_ends_the_run_failed_and_registers_nothing(store):
    with pytest.raises(TrainingDiverged):
        with registry.training_run(NAME, tags={"nightrec.ds": "2026-11-20"}, log_system_metrics=False):
            raise TrainingDiverged("two-tower retrieval", epoch=2, step=7, last_finite_loss=1.5)
    found = mlflow.search_runs([store], output_format="list")
    runs = [r for r in found if r.data.tags.get("nightrec.kind") != registry.NIGHT_KIND]
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "epoch 2, step 7" in runs[0].data.tags["nightrec.error"]
    # Under its night's parent run, named with its date.
    night = registry.night_run("2026-11-20")
    assert runs[0].data.tags["mlflow.parentRunId"] == night and len(found) == 2
    assert runs[0].info.run_name == f"{NAME}-2026-11-20"
    assert mlflow.active_run() is None
    assert registry.get_alias_version(NAME, "challenger") is None


def test_log_training_run_joins_an_open_training_run(store):
    with registry.training_run(NAME, tags={}, log_system_metrics=False) as run_id:
        ref = _log(_result())
    assert ref.run_id == run_id
    assert len(mlflow.search_runs([store], output_format="list")) == 1


def test_learning_curve_has_loss_and_quality_axes():
    fig = registry.learning_curve(_result().history, NAME)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "recall_at_50"


def test_live_epoch_metrics_are_not_logged_twice(store):
    result = _result()
    with registry.training_run(NAME, tags={}, log_system_metrics=False) as run_id:
        for row in result.history:
            registry.log_epoch(row["epoch"], row)
        _log(result)
    assert len(MlflowClient().get_metric_history(run_id, "train_loss")) == 3


def test_a_copied_home_is_refused_instead_of_writing_into_the_original(store, tmp_path):
    import shutil

    copy = tmp_path.parent / f"{tmp_path.name}-copy"
    shutil.copytree(tmp_path, copy)  # what `cp -a` does: the database still names the old artifact folder
    with pytest.raises(RuntimeError) as err:
        registry.configure_mlflow(f"sqlite:///{copy}/mlflow.db", (copy / "artifacts").as_uri(), "test")
    assert str(tmp_path / "artifacts") in str(err.value) and "NIGHTREC_MLFLOW_ARTIFACT_ROOT" in str(err.value)
    # The original home, and a deliberate shared root, still work.
    assert registry.configure_mlflow(
        f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "artifacts").as_uri(), "test"
    )
    shared = (tmp_path / "artifacts").as_uri()
    assert registry.configure_mlflow(f"sqlite:///{copy}/mlflow.db", shared, "test")
