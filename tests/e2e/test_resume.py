"""A night killed in training resumes: the ETL is not recomputed, training continues from its checkpoint.

The pipeline runs as users run it (`nightrec run` in a subprocess) and is SIGKILLed after the two-tower's
first epoch by the failpoint NIGHTREC_FAULT=train.after_epoch:1:kill, on the real code path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from mlflow import MlflowClient

from nightrec.data import synthetic
from nightrec.io import lake
from nightrec.io.store import open_store
from nightrec.publish import pointer
from nightrec.settings import Settings
from nightrec.training import tracking

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUN_DATE = "2026-11-22"


def _run(env: dict, raw, log, *extra_env: tuple[str, str]) -> tuple[int, str]:
    """Run the CLI in its own process group; output to a file, not a pipe, because a SIGKILLed run leaves
    its ephemeral Prefect server behind holding inherited pipes open. The group is killed afterwards."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "nightrec.cli", "run", "--data", str(raw), "--date", RUN_DATE],
            env={**env, **dict(extra_env)},
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


def test_killed_training_resumes_without_recomputing_features(tmp_path):
    raw = tmp_path / "raw"
    synthetic.generate(600, 200, 40, raw, seed=11, events_per_user=50.0)
    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NIGHTREC_", "PREFECT_API"))},
        "NIGHTREC_HOME": str(home),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "NIGHTREC_SPARK__SHUFFLE_PARTITIONS": "2",
        "NIGHTREC_SPARK__DRIVER_MEMORY": "2g",
        "NIGHTREC_TRAIN__RETRIEVAL_EPOCHS": "3",
        "NIGHTREC_TRAIN__RANKING_EPOCHS": "2",
        "NIGHTREC_FEATURES__HOLDOUT_DAYS": "5",
        "NIGHTREC_FEATURES__VALID_DAYS": "5",
        "NIGHTREC_SCORING__TOP_K": "10",
    }
    rc, out = _run(env, raw, tmp_path / "killed.log", ("NIGHTREC_FAULT", "train.after_epoch:1:kill"))
    assert rc == -signal.SIGKILL, out
    settings = Settings(home=home)
    store = open_store(settings.store)
    assert pointer.read_live(store) is None, "a killed night must not publish"
    from datetime import date

    ds = date.fromisoformat(RUN_DATE)
    features_marker = lake.read_marker(lake.partition_path(settings.lake, "retrieval_examples", ds))
    assert features_marker is not None, "the ETL finished before training was killed"

    rc, out = _run(env, raw, tmp_path / "resumed.log")
    assert rc == 0, out
    last = json.loads((home / "last_run.json").read_text())
    assert last["build_features"]["skipped"] is True, "the ETL must not be recomputed"
    assert lake.read_marker(lake.partition_path(settings.lake, "retrieval_examples", ds)) == features_marker
    assert pointer.read_live(store)[0].generation == 1

    tracking.configure_mlflow(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow_experiment
    )
    client = MlflowClient()
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'nightrec-retrieval'")
    statuses = sorted(r.info.status for r in runs)
    # The killed attempt is closed as KILLED, not left RUNNING; the resumed one finished.
    assert statuses == ["FINISHED", "KILLED"], statuses
    finished = next(r for r in runs if r.info.status == "FINISHED")
    killed_run = next(r for r in runs if r.info.status == "KILLED")
    # The run that finished picked up the killed one's checkpoint (and says so on the killed run).
    assert finished.info.run_id in killed_run.data.tags["nightrec.error"]
