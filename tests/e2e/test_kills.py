"""A night SIGKILLed inside each stage and at the stage boundaries, then re-run, publishes what an
uninterrupted night publishes, and leaves nothing behind.

The pipeline runs as users run it (`nightrec run` in a subprocess) and is SIGKILLed at a failpoint
(``NIGHTREC_FAULT=<point>:kill``) on the real code path. One home takes every kill in turn, in the order a
night reaches them: each run resumes what the killed one left (markers, checkpoints, registered versions)
and dies at the next point, so every point is reached with the state a kill there really leaves. The last
run is not killed; its lists must equal those of an uninterrupted night in a home of its own.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from nightrec import registry
from nightrec.data import synthetic
from nightrec.io import lake
from nightrec.io.store import open_store
from nightrec.ops import night_lock
from nightrec.publish import pointer
from nightrec.publish.reader import verify_live
from nightrec.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUN_DATE = "2026-11-22"
# In the order a night reaches them: inside each stage, and the boundaries where a stage is done and the next
# has not started (the rest of the boundaries are the same state as the kill inside the next stage).
POINTS = [
    "gate.before_report:raw",  # validate_raw: suites run, no verdict
    "features.during_write:user_features",  # build_features: a table in place, unmarked
    "stage.before:validate_features",
    "gate.before_report:features",
    "train.after_epoch:1",  # train_retrieval: one epoch checkpointed
    "stage.before:train_ranking",
    "stage.before:evaluate_and_promote",
    "promotion.after_register",  # a policy version registered, not the champion
    "precompute.after_part:0",  # half the lists in staging
    "gate.before_report:recommendations",
    "publish.after_parts",  # parts in the store, no manifest
    "publish.before_flip",  # a whole snapshot, the pointer not moved
]


def _env(tmp_path: Path, home: Path) -> dict:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NIGHTREC_", "PREFECT_API"))},
        "NIGHTREC_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "NIGHTREC_SPARK__SHUFFLE_PARTITIONS": "2",
        "NIGHTREC_SPARK__DRIVER_MEMORY": "2g",
        "NIGHTREC_TRAIN__RETRIEVAL_EPOCHS": "3",
        "NIGHTREC_TRAIN__RANKING_EPOCHS": "2",
        "NIGHTREC_FEATURES__HOLDOUT_DAYS": "5",
        "NIGHTREC_FEATURES__VALID_DAYS": "5",
        "NIGHTREC_SCORING__TOP_K": "10",
        # Two chunks of users, so a kill after the first part leaves half the lists in staging.
        "NIGHTREC_SCORING__USER_CHUNK_SIZE": "400",
    }


def _run(env: dict, raw: Path, log: Path, fault: str | None = None) -> tuple[int, str]:
    """`nightrec run` in its own process group (killed afterwards: a SIGKILLed run leaves its ephemeral Prefect
    server behind); output to a file, not a pipe."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nightrec.cli", "run", "--data", str(raw), "--date", RUN_DATE],
            env={**env, **({"NIGHTREC_FAULT": f"{fault}:kill"} if fault else {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=800)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return rc, log.read_text()[-3000:]


def _live_lists(home: Path) -> pd.DataFrame:
    store = open_store(Settings(home=home).store)
    manifest = verify_live(store)
    recs = pd.concat(pd.read_parquet(io.BytesIO(store.get_bytes(p.key))) for p in manifest.parts)
    return recs[["user_id", "rank", "item_id"]].sort_values(["user_id", "rank"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    raw = root / "raw"
    synthetic.generate(600, 200, 40, raw, seed=11, events_per_user=50.0)
    # The uninterrupted night, in a home of its own: the lists every resumed night must publish.
    clean = root / "clean"
    rc, out = _run(_env(root, clean), raw, root / "clean.log")
    assert rc == 0, out
    home = root / "home"
    return {"raw": raw, "root": root, "home": home, "env": _env(root, home), "reference": _live_lists(clean)}


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_leaves_nothing_live_and_the_next_run_resumes(night, point):
    rc, out = _run(night["env"], night["raw"], night["root"] / f"{point}.log", point)
    assert rc == -signal.SIGKILL, f"the night did not reach {point}:\n{out}"
    store = open_store(Settings(home=night["home"]).store)
    assert pointer.read_live(store) is None, f"a night killed at {point} published"
    # The killed run's lock is still there (nothing ran its `finally`); the next run takes it over.
    assert night_lock.lock_path(Settings(home=night["home"]).lake, date.fromisoformat(RUN_DATE)).exists()


def test_the_run_after_every_kill_publishes_the_lists_of_an_uninterrupted_night(night):
    home = night["home"]
    rc, out = _run(night["env"], night["raw"], night["root"] / "final.log")
    assert rc == 0, out
    pd.testing.assert_frame_equal(_live_lists(home), night["reference"])

    settings = Settings(home=home)
    last = json.loads((home / "last_run.json").read_text())
    assert last["status"] == "completed"
    assert last["build_features"]["skipped"] is True, "the ETL finished in an earlier run: not recomputed"
    # Nothing left behind: no staging folder, no lock, no MLflow run still RUNNING.
    assert not list(Path(settings.lake).glob("*/_staging/*"))
    assert not list((Path(settings.lake) / night_lock.LOCKS).glob("*.json"))
    registry.connect(settings)
    client = MlflowClient()
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    killed = sorted(r.info.run_name for r in runs if r.info.status == "KILLED")
    # The two-tower killed after its first epoch, and the evaluation killed after registering, were closed
    # by the runs that resumed them.
    assert any(n.startswith("nightrec-retrieval-") for n in killed), killed
    assert any(n.startswith("evaluate-") for n in killed), killed
    retrieval = [r for r in runs if r.data.tags.get("nightrec.model") == "nightrec-retrieval"]
    finished = {r.info.run_id for r in retrieval if r.info.status == "FINISHED"}
    for r in retrieval:
        if r.info.status == "KILLED":  # it names the run that picked up its checkpoint
            assert any(f in r.data.tags["nightrec.error"] for f in finished), r.data.tags
    ds = date.fromisoformat(RUN_DATE)
    assert lake.read_marker(lake.partition_path(settings.lake, "recs", ds)) is not None
