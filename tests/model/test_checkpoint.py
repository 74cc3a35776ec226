"""Scenarios 12 and 13 of RELIABILITY.md: killed mid-training, resumed; killed while saving a checkpoint.

The kills fire at named fault points on the real code path (``NIGHTREC_FAULT``): ``exit`` raises SystemExit
in-process (fast), ``kill`` SIGKILLs a subprocess (the real thing, once).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from nightrec import registry
from nightrec.models.configs import DeepFMConfig
from nightrec.settings import TrainSettings
from nightrec.training import checkpoint, loop, stages
from nightrec.training.datasets import RankingTensors

ROOT = Path(__file__).resolve().parents[2]
DIMS = (30, 4, 40, 4, 11, 32, 32, 12)
# Dropout on, so a resume that failed to restore the global RNG would not match the clean run.
FM = DeepFMConfig(field_dims=DIMS, embed_dim=8, hidden=(32,), dropout=0.2)
SETTINGS = TrainSettings(device="cpu", ranking_epochs=4, ranking_batch_size=128, ranking_lr=0.01, patience=5)


def _ranking(n: int, seed: int) -> RankingTensors:
    g = np.random.default_rng(seed)
    x = np.stack([g.integers(0, d, n) for d in DIMS], axis=1)
    y = (x[:, 1] == x[:, 3]) ^ (g.random(n) < 0.1)
    return RankingTensors(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.float32)))


TRAIN, VALID = _ranking(2000, 0), _ranking(400, 1)


def _train(path: Path | None, seen: list[int] | None = None) -> loop.TrainResult:
    on_epoch = (lambda e, _m: seen.append(e)) if seen is not None else None
    return loop.train_ranking(TRAIN, VALID, FM, SETTINGS, on_epoch=on_epoch, checkpoint_path=path)


@pytest.fixture(scope="module")
def clean() -> loop.TrainResult:
    return _train(None)


def _assert_same_result(a: loop.TrainResult, b: loop.TrainResult) -> None:
    assert [r["epoch"] for r in a.history] == [r["epoch"] for r in b.history]
    for key in ("train_loss", "logloss", "auc"):
        got, want = [r[key] for r in a.history], [r[key] for r in b.history]
        assert got == pytest.approx(want, rel=1e-5, abs=1e-6), key
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpoint_path_is_keyed_by_model_night_and_inputs(tmp_path):
    key = checkpoint.fingerprint({"features": "abc"}, {"dim": 16})
    assert checkpoint.checkpoint_path(tmp_path, "nightrec-ranking", date(2026, 11, 20), key) == (
        tmp_path / "nightrec-ranking" / f"2026-11-20-{key}.pt"
    )
    assert key == checkpoint.fingerprint({"features": "abc"}, {"dim": 16})
    assert key != checkpoint.fingerprint({"features": "abd"}, {"dim": 16})  # changed inputs: fresh start


def test_a_run_killed_after_epoch_1_resumes_at_epoch_2_and_matches_a_clean_run(clean, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    monkeypatch.setenv(checkpoint.FAULT_ENV, "train.after_epoch:1:exit")
    first: list[int] = []
    with pytest.raises(SystemExit):
        _train(path, first)
    assert first == [1] and checkpoint.load(path)["fit"]["epoch"] == 1
    monkeypatch.delenv(checkpoint.FAULT_ENV)
    second: list[int] = []
    resumed = _train(path, second)
    assert second == [2, 3, 4]  # epoch 1 was not trained again
    _assert_same_result(resumed, clean)
    assert resumed.best_epoch == clean.best_epoch


def test_a_sigkilled_training_process_resumes_from_its_last_checkpoint(clean, tmp_path):
    path = tmp_path / "ckpt.pt"
    script = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {str(ROOT / "tests" / "model")!r}); sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        import test_checkpoint as t
        t._train(Path({str(path)!r}))
        """
    )
    env = {"NIGHTREC_FAULT": "train.after_epoch:2:kill", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert checkpoint.load(path)["fit"]["epoch"] == 2
    seen: list[int] = []
    _assert_same_result(_train(path, seen), clean)
    assert seen == [3, 4]


def test_a_kill_mid_write_leaves_the_previous_checkpoint_which_is_used(clean, tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    monkeypatch.setenv(checkpoint.FAULT_ENV, "train.after_epoch:1:exit")
    with pytest.raises(SystemExit):
        _train(path)
    before = path.read_bytes()
    monkeypatch.setenv(checkpoint.FAULT_ENV, "checkpoint.mid_write:exit")  # dies writing epoch 2's
    with pytest.raises(SystemExit):
        _train(path)
    assert path.read_bytes() == before
    assert list(tmp_path.glob(".ckpt.pt.tmp-*"))  # the torn write, never renamed into place
    monkeypatch.delenv(checkpoint.FAULT_ENV)
    seen: list[int] = []
    _assert_same_result(_train(path, seen), clean)
    assert seen == [2, 3, 4] and not list(tmp_path.glob(".ckpt.pt.tmp-*"))


@pytest.mark.parametrize("damage", ["truncate", "flip_byte"])
def test_a_torn_or_corrupted_checkpoint_is_never_loaded(clean, tmp_path, monkeypatch, damage):
    path = tmp_path / "ckpt.pt"
    monkeypatch.setenv(checkpoint.FAULT_ENV, "train.after_epoch:2:exit")
    with pytest.raises(SystemExit):
        _train(path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) * 2 // 3]
    else:
        data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    assert checkpoint.load(path) is None
    monkeypatch.delenv(checkpoint.FAULT_ENV)
    seen: list[int] = []
    _assert_same_result(_train(path, seen), clean)
    assert seen == [1, 2, 3, 4]  # a fresh start


def test_remove_deletes_the_checkpoint_and_partial_writes(tmp_path):
    path = tmp_path / "m" / "2026-11-20-k.pt"
    checkpoint.save(path, {"x": torch.ones(2)})
    (path.parent / f".{path.name}.tmp-123").write_bytes(b"half")
    checkpoint.remove(path)
    assert not list(path.parent.iterdir())
    assert checkpoint.load(path) is None


def test_the_run_that_resumes_ends_the_killed_runs_mlflow_run_killed(tmp_path, monkeypatch):
    """A SIGKILLed process leaves its MLflow run RUNNING; the next run of the same training ends it KILLED."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    previous = mlflow.get_tracking_uri()
    exp = registry.configure_mlflow(f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "art").as_uri(), "t")
    try:
        client = MlflowClient()
        killed = client.create_run(exp).info.run_id  # as a killed process leaves it: RUNNING
        ckpt = tmp_path / "checkpoints" / "nightrec-ranking" / "2026-11-20-abc.pt"
        stages._adopt(ckpt, killed)
        resumer = client.create_run(exp).info.run_id
        stages._adopt(ckpt, resumer)
        run = client.get_run(killed)
        assert run.info.status == "KILLED" and resumer in run.data.tags["nightrec.error"]
        assert client.get_run(resumer).info.status == "RUNNING"
        assert not registry.end_orphan_run(killed, resumed_by=resumer)  # already ended: left alone
        checkpoint.save(ckpt, {"x": 1})
        stages._release(ckpt)
        assert not list(ckpt.parent.iterdir())
    finally:
        mlflow.set_tracking_uri(previous)
