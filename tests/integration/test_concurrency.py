"""Operations scenarios 17 and 18 of RELIABILITY.md: concurrent nights on one home, and a zombie night.

17. SQLite contention: two nights run at once as two `nightrec run` processes on one `.nightrec` home, so
    two ephemeral Prefect API servers share one `prefect.db` and both processes share `mlflow.db`, both fresh,
    and the one GX project (gates take turns). Both finish; `database is locked` (or a migration race) never
    escapes into a night. The nights are for two dates: lake partitions and training checkpoints have one
    writer per (table, date), and two runs of the *same* date are scenario 22 (the deployment's concurrency
    limit, or the pointer CAS: "superseded by run X").
18. Zombie: the flow process of a `nightly` deployment run is SIGKILLed mid-training with no worker left to
    report it (the node died), so Prefect says `Running` and the run holds the deployment's concurrency slot.
    The zombie automation of prefect.yaml marks it `Crashed` once its heartbeats stop, which frees the slot;
    the next `nightly` run then resumes the night and publishes (publish relies on the pointer CAS, never on
    Prefect state).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
from prefect.client.schemas.objects import StateType
from prefect.states import Pending

from flows.automations import ZOMBIE_AUTOMATION, apply_automations, automation, find_automations
from nightrec import registry
from nightrec.data import synthetic
from nightrec.io.store import open_store
from nightrec.ops.local_stack import LocalStack, local_stack
from nightrec.publish import pointer, snapshot
from nightrec.publish.reader import verify_live
from nightrec.settings import Settings
from tests.integration.polling import client_of, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parents[2]
NEWER, OLDER = "2026-11-22", "2026-11-21"
# Small enough for about a minute a night, big enough that the first challenger beats popularity (as in e2e).
SMALL = {
    "NIGHTREC_SPARK__SHUFFLE_PARTITIONS": "2",
    "NIGHTREC_SPARK__DRIVER_MEMORY": "1g",
    "NIGHTREC_TRAIN__RETRIEVAL_EPOCHS": "3",
    "NIGHTREC_TRAIN__RANKING_EPOCHS": "2",
    "NIGHTREC_FEATURES__HOLDOUT_DAYS": "5",
    "NIGHTREC_FEATURES__VALID_DAYS": "5",
    "NIGHTREC_SCORING__TOP_K": "10",
}


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("concurrency") / "raw"
    synthetic.generate(600, 200, 40, out, seed=11, events_per_user=50.0)
    return out


def _mlflow_client(home: Path) -> tuple[MlflowClient, str, Settings]:
    settings = Settings(home=home)
    exp = registry.connect(settings)
    return MlflowClient(), exp, settings


# ---- 17 ---------------------------------------------------------------------------------------------------

_FIRST_USE = """
import sys, time
from pathlib import Path
from nightrec import registry
uri, barrier, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
(barrier / f"ready-{me}").touch()
while not (barrier / "go").exists():
    time.sleep(0.005)
print(registry.configure_mlflow(uri, "file:///unused", "nightrec"))
"""


@pytest.mark.slow
def test_processes_first_using_a_fresh_mlflow_store_together_all_succeed(tmp_path):
    """MLflow creates a fresh SQLite store without a lock between processes; without nightrec's first-use lock
    this fails with `duplicate column name: step` or an alembic version mismatch (3 of 3 tries)."""
    uri, barrier = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}", tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "first_use.py"
    script.write_text(_FIRST_USE)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), uri, str(barrier), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(3)
    ]
    deadline = time.monotonic() + 120
    while len(list(barrier.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    (barrier / "go").touch()  # all three imported: they open the fresh database at the same moment
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert len({o.strip().splitlines()[-1] for o in outs}) == 1, outs  # one experiment, the same id in all


def _night(env: dict, raw: Path, run_date: str, log: Path) -> subprocess.Popen:
    """`nightrec run` in its own process group, output to a file (a pipe would be held open by the child's
    ephemeral Prefect server)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "nightrec.cli", "run", "--data", str(raw), "--date", run_date],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _finish(proc: subprocess.Popen, timeout_s: float) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the night left behind (its ephemeral API server)
        except ProcessLookupError:
            pass


_LOG_HEADER = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \| \w+\s*\| (\S+) - ", re.M)
# Prefect's own server retries a locked database inside: the API answers 503 and the client retries, the event
# consumers put the message back (logged as "Failed in consume_loop"). Only a lock anywhere else has escaped.
_RETRIED_INSIDE = ("prefect.server", "docket", "uvicorn")


def _escaped_lock_errors(out: str) -> list[str]:
    """The log records of a night's output that mention a locked database outside Prefect's server."""
    starts = [(m.start(), m.group(1)) for m in _LOG_HEADER.finditer(out)]
    blocks = [(None, out[: starts[0][0] if starts else len(out)])]
    blocks += [
        (name, out[a : (starts[i + 1][0] if i + 1 < len(starts) else len(out))])
        for i, (a, name) in enumerate(starts)
    ]
    return [
        text[:2000]
        for name, text in blocks
        if "database is locked" in text and not (name or "").startswith(_RETRIED_INSIDE)
    ]


def test_two_nights_at_once_on_one_home_both_finish(tmp_path, raw):
    home = tmp_path / "home"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NIGHTREC_", "PREFECT_"))},
        **SMALL,
        "NIGHTREC_HOME": str(home),
        # One Prefect home for both: each process starts its own ephemeral API server on the same prefect.db.
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    t0 = time.monotonic()
    procs = {ds: _night(env, raw, ds, tmp_path / f"night-{ds}.log") for ds in (NEWER, OLDER)}
    rcs = {ds: _finish(p, 900) for ds, p in procs.items()}
    elapsed = time.monotonic() - t0
    outs = {ds: (tmp_path / f"night-{ds}.log").read_text() for ds in procs}

    for ds, out in outs.items():
        assert not _escaped_lock_errors(out), f"night {ds} hit a SQLite lock:\n{_escaped_lock_errors(out)}"
        if retried := out.count("database is locked"):
            print(f"night {ds}: Prefect's server retried a locked prefect.db {retried} time(s)")
        # A night either completes, or (same date only) loses the pointer race and says to whom.
        assert rcs[ds] == 0 or ("superseded by run" in out and rcs[ds] == 1), f"night {ds}:\n{out[-4000:]}"
    assert rcs == {NEWER: 0, OLDER: 0}, {ds: out[-3000:] for ds, out in outs.items()}

    # The pointer ends at the newer date whatever the finishing order; the older night's snapshot is published
    # (made live first, or kept beside the newer one), and the live one verifies against its manifest.
    store = open_store(Settings(home=home).store)
    live, _ = pointer.read_live(store)
    assert str(live.ds) == NEWER
    published = {str(snapshot.load_manifest(store, k).ds) for k in snapshot.list_manifests(store)}
    assert published == {NEWER, OLDER}
    verify_live(store)

    # Prefect: one shared database holds both nights, every run finished (none left Running or Pending).
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:
        runs = db.execute(
            "SELECT f.name, fr.name, fr.state_type FROM flow_run fr JOIN flow f ON f.id = fr.flow_id"
        ).fetchall()
    nightly = sorted(name for flow, name, _ in runs if flow == "nightly")
    assert nightly == [f"nightly-{OLDER}", f"nightly-{NEWER}"], runs
    assert {state for *_, state in runs} == {"COMPLETED"}, runs

    # MLflow: one shared store, one evaluation per night, no run left RUNNING.
    client, exp, _ = _mlflow_client(home)
    runs = client.search_runs([exp], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status != "FINISHED"]
    evaluated = [r for r in runs if r.data.tags.get("nightrec.stage") == "evaluate"]
    assert len(evaluated) == 2, [r.info.run_name for r in evaluated]
    print(f"two concurrent nights finished in {elapsed:.0f}s")


# ---- 18 ---------------------------------------------------------------------------------------------------

HEARTBEAT_S = 30  # Prefect's minimum; production keeps the default (180 s) and prefect.yaml's 600 s window
WITHIN_S = 120  # four heartbeats: a healthy night on a loaded machine must never look like a zombie


def _nightly_run(stack: LocalStack, raw: Path, run_date: str) -> str:
    """A run of the `nightly` deployment, created the way the UI's Run button does (it starts Scheduled)."""
    return stack.run_deployment("nightly/nightly", {"data": str(raw), "run_date": run_date})


def _runs_in(client, *types: StateType):
    return client.read_flow_runs(
        flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(types))))
    )


def test_zombie_night_is_crashed_by_the_automation_and_the_next_night_publishes(tmp_path, raw):
    home = tmp_path / "home"
    env = {**SMALL, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)}
    t0 = time.monotonic()
    with local_stack(home, pools=[], extra_env=env) as stack:
        # The stack applied prefect.yaml's automation; applying it with a shorter window updates it in place.
        spec = automation(ZOMBIE_AUTOMATION)
        spec["trigger"]["within"] = WITHIN_S
        apply_automations(stack.api_url, [spec])
        (on_server,) = find_automations(stack.api_url, ZOMBIE_AUTOMATION)
        trigger = on_server.trigger
        assert on_server.enabled and trigger.posture == "Proactive"
        assert trigger.match.model_dump() == {"prefect.resource.id": "prefect.flow-run.*"}
        assert trigger.after == {"prefect.flow-run.heartbeat"}
        assert trigger.for_each == {"prefect.resource.id"}
        expected = {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Crashed"}
        assert expected <= set(trigger.expect)
        assert trigger.threshold == 1 and trigger.within.total_seconds() == WITHIN_S
        actions = [(a.type, a.state.value) for a in on_server.actions]
        assert actions == [("change-flow-run-state", "CRASHED")]

        # Night 1, run as a process worker runs it: take the deployment's one concurrency slot (Pending),
        # start the flow process. The failpoint SIGKILLs it after the two-tower's first epoch and no worker is
        # left to report it: the node is gone.
        zombie = _nightly_run(stack, raw, NEWER)
        with client_of(stack) as client:
            taken = client.set_flow_run_state(zombie, Pending())
            assert taken.state is not None and taken.state.is_pending(), taken
        with open(stack.logs / "zombie.log", "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "prefect.engine"],
                env={
                    **stack.env,
                    "PREFECT__FLOW_RUN_ID": zombie,
                    "NIGHTREC_FAULT": "train.after_epoch:1:kill",
                },
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        rc = _finish(proc, 600)
        assert rc == -signal.SIGKILL, (stack.logs / "zombie.log").read_text()[-4000:]
        with client_of(stack) as client:
            assert client.read_flow_run(zombie).state.is_running(), "Prefect should still say Running"
        killed = time.monotonic()

        # Night 2: a worker on the replacement node, and the next run of `nightly` (same date: a re-run). It
        # waits for the slot the zombie holds until the automation marks the zombie Crashed, then resumes the
        # night and publishes.
        stack.start_worker("local-process", "local-process-2")
        night = _nightly_run(stack, raw, NEWER)

        def finished(client):
            run = client.read_flow_run(night)
            return run if run.state.is_final() else None

        run = wait_for(stack, finished, 900, "the next night to finish")
        assert run.state.is_completed(), run.state
        with client_of(stack) as client:
            dead = client.read_flow_run(zombie)
            assert dead.state.is_crashed() and "missing heartbeats" in (dead.state.message or ""), dead.state
            # The zombie held the slot until the automation crashed it; the next night started after that.
            assert run.start_time >= dead.state.timestamp, (run.start_time, dead.state.timestamp)
            # The stage subflow running when the process died is crashed too; nothing is left Running.
            crashed = {r.id for r in _runs_in(client, StateType.CRASHED)}
            assert dead.id in crashed and len(crashed) >= 2, crashed
            assert not _runs_in(client, StateType.RUNNING, StateType.PENDING)

    store = open_store(Settings(home=home).store)
    live, _ = pointer.read_live(store)
    assert str(live.ds) == NEWER and live.generation == 1
    assert len(snapshot.list_manifests(store)) == 1, "the zombie never published"
    verify_live(store)
    # MLflow: the killed two-tower run was closed KILLED by the night that resumed its checkpoint.
    client, exp, _ = _mlflow_client(home)
    runs = client.search_runs([exp], max_results=1000)
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    retrieval = sorted(
        r.info.status for r in runs if r.data.tags.get("nightrec.model") == "nightrec-retrieval"
    )
    assert retrieval == ["FINISHED", "KILLED"], retrieval
    print(
        f"zombie crashed by the automation, next night published: {time.monotonic() - t0:.0f}s in all, "
        f"{time.monotonic() - killed:.0f}s after the kill"
    )
