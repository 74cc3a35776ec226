"""The production shape, run for real (`make test-stack`): `nightrec stack` brings up Postgres, SeaweedFS, Prefect
and MLflow on Postgres, a Spark master with two workers, a Prefect worker per pool and the API, as processes.

Then the modular chain runs the way an operator runs it: triggered through the Prefect API as the UI's Run
button does, each stage deployment on its pool, the Spark stages on the cluster's executors, models and their
artifacts in MLflow (artifacts proxied to S3), the training under torchrun on the gpu pool, the lists published to SeaweedFS. Night 2
(new data) loses a Spark worker in the middle of build-features and still publishes; night 3 loses the batch
worker in the middle of precompute, as with a dead machine, and the next trigger resumes it. Everything is torn
down at the end with no process left.

The tests run in file order and share one stack (each night builds on the one before).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import psycopg2
import pytest
import yaml
from mlflow import MlflowClient

from flows.automations import ZOMBIE_AUTOMATION, apply_automations, automation
from nightrec.data import synthetic
from nightrec.io.store import open_store
from nightrec.ops.local_stack import LocalStack
from nightrec.ops.stack import Stack, descendants, group_processes, pid_alive
from nightrec.publish import pointer
from schemas.params import STAGES
from tests.integration.polling import wait_for
from tests.integration.test_concurrency import SMALL as SMALL_NIGHT

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
NIGHT_1 = dt.date(2026, 11, 22)
NIGHT_2 = NIGHT_1 + dt.timedelta(days=1)
NIGHT_3 = NIGHT_2 + dt.timedelta(days=1)
STAGE_DEPLOYMENTS = [s.replace("_", "-") for s in STAGES]
SPARK_STAGES = ("validate-raw", "build-features", "validate-features")
# A night of about two minutes on this machine; heartbeats every 30 s (Prefect's minimum) so that a flow run
# lost with its machine is found within the automation's window below instead of prefect.yaml's 600 s.
SMALL = {
    **SMALL_NIGHT,  # the small night of the Prefect integration tests
    # Training on the gpu pool through torch.distributed: two processes (gloo on this CPU) per model.
    "NIGHTREC_TRAIN__PROCESSES": "2",
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
}
ZOMBIE_WITHIN_S = 120


@pytest.fixture(scope="module")
def stack():
    # Postgres runs as its own user (it refuses root), which must reach its folder: not under a private tmp.
    home = Path(tempfile.mkdtemp(prefix="nightrec-stack-"))
    home.chmod(0o755)
    synthetic.generate(600, 200, 40, home / "raw", seed=11, events_per_user=50.0, end_date=NIGHT_1)
    # The next days' exports: one more day of events each.
    synthetic.generate(600, 200, 41, home / "raw-next", seed=11, events_per_user=50.0, end_date=NIGHT_2)
    synthetic.generate(600, 200, 42, home / "raw-third", seed=11, events_per_user=50.0, end_date=NIGHT_3)
    stack = Stack.open(home, extra_env=SMALL)
    try:
        stack.up()
        spec = automation(ZOMBIE_AUTOMATION)
        spec["trigger"]["within"] = ZOMBIE_WITHIN_S
        apply_automations(stack.api_url, [spec])
        yield stack
    finally:
        stack = Stack.open(
            home
        )  # the pids as recorded now (a test may have restarted services through the CLI)
        pids = [p for name in stack.process_names() if stack.alive(name) for p in _tree(stack.pids[name])]
        stack.down()
        left = [p for p in pids if pid_alive(p)]
        assert not left, f"processes left after `stack down`: {left}"
        assert not _processes_under(home), "a process still works in the stack's home"
        shutil.rmtree(home, ignore_errors=True)


def _tree(pid: int) -> set[int]:
    return set(group_processes(pid)) | descendants(pid) | {pid}


def _processes_under(home: Path) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(home)) and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _prefect(stack: Stack) -> LocalStack:
    """The polling helpers of the Prefect integration tests, pointed at this stack's server."""
    return LocalStack(stack.api_url, stack.url("prefect-server"), stack.env("deploy"), stack.logs)


def _trigger(stack: Stack, deployment: str, params: dict) -> str:
    """A run created as the UI's Run button creates it (the server validates the parameters)."""
    return _prefect(stack).run_deployment(deployment, params)


def _aws(stack: Stack) -> dict[str, str]:
    env = stack.env("worker-batch")
    return {
        k: env[k]
        for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }


def _s3(stack: Stack):
    aws = _aws(stack)
    return boto3.client(
        "s3",
        endpoint_url=aws["AWS_ENDPOINT_URL"],
        aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
        region_name=aws["AWS_DEFAULT_REGION"],
    )


def _live(stack: Stack, monkeypatch):
    for k, v in _aws(stack).items():
        monkeypatch.setenv(k, v)
    return pointer.read_live(open_store(stack.env("worker-batch")["NIGHTREC_STORE"]))


def _runs(client, deployment: str, ds: dt.date | None = None) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment]))
    )
    return [r for r in runs if ds is None or r.name.endswith(ds.isoformat())]


def _wait_published(stack: Stack, ds: dt.date, timeout_s: float, *, since: int = 0):
    """Wait until the (since+1)-th run of `publish` for ``ds`` completed; fail at once when a stage failed."""

    def published(client):
        for name in STAGE_DEPLOYMENTS:
            for r in _runs(client, name, ds):
                if r.state.is_final() and not r.state.is_completed() and not r.state.is_crashed():
                    raise AssertionError(f"stage {name} ended {r.state.type}: {r.state.message}")
        done = [r for r in _runs(client, "publish", ds) if r.state.is_completed()]
        return done if len(done) > since else None

    return wait_for(_prefect(stack), published, timeout_s, f"publish of {ds} to complete")


# ---- the stack ---------------------------------------------------------------------------------------------


def test_every_service_runs_and_answers_on_its_real_backend(stack):
    assert {state for _, state, _, _ in stack.status()} == {"running"}, stack.status()
    env = stack.compose.environment("postgres")
    # Prefect and MLflow keep their state in Postgres (their tables are there), not in SQLite.
    for db, table in (("prefect", "deployment"), ("mlflow", "experiments")):
        with psycopg2.connect(
            host="127.0.0.1", port=stack.ports["postgres"], user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"], dbname=db,
        ) as conn, conn.cursor() as cur:  # fmt: skip
            cur.execute(f"SELECT count(*) FROM {table}")
            assert cur.fetchone()[0] >= 1, (db, table)
    assert not list(stack.home.rglob("*.db")), "no SQLite database anywhere in the stack"
    assert stack.alive_spark_workers() == stack.spark_workers == 2
    s3 = _s3(stack)
    assert {"nightrec-recs", "nightrec-mlflow"} <= {b["Name"] for b in s3.list_buckets()["Buckets"]}
    # Each stage worker works in a folder of its own.
    cwds = {name: os.readlink(f"/proc/{stack.pids[name]}/cwd") for name in stack.compose.pools()}
    assert len(set(cwds.values())) == len(cwds) and all(
        Path(c) == stack.worker_dir(n) for n, c in cwds.items()
    ), cwds


def test_the_deployments_are_registered_on_the_pools_of_prefect_yaml(stack):
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    wanted = {d["name"]: d["work_pool"]["name"] for d in spec["deployments"]}
    from tests.integration.polling import client_of

    with client_of(_prefect(stack)) as client:
        have = {d.name: d.work_pool_name for d in client.read_deployments()}
    assert have == wanted


# ---- night 1 -----------------------------------------------------------------------------------------------


def test_night_1_runs_each_stage_on_its_pool_and_cluster_and_publishes_to_s3(stack, monkeypatch):
    _trigger(stack, "validate-raw/validate-raw", {"data": str(stack.raw)})
    _wait_published(stack, NIGHT_1, 900)
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    pools = {d["name"]: d["work_pool"]["name"] for d in spec["deployments"]}
    from tests.integration.polling import client_of

    with client_of(_prefect(stack)) as client:
        for name in STAGE_DEPLOYMENTS:
            runs = [r for r in _runs(client, name, NIGHT_1) if r.state.is_completed()]
            assert runs, f"no completed run of {name}"
            assert {r.work_pool_name for r in runs} == {pools[name]}, name

    # The Spark stages ran as applications of the standalone master, their executors on both workers.
    apps = stack.spark_state()["completedapps"]
    assert len(apps) >= len(SPARK_STAGES), apps
    for i in range(1, stack.spark_workers + 1):
        assert list((stack.home / "spark" / f"spark-worker-{i}").glob("app-*")), f"no executor on worker {i}"

    # Models in the registry, their artifacts in the S3 bucket behind the MLflow server.
    client = MlflowClient(stack.url("mlflow"))
    s3 = _s3(stack)
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="nightrec-mlflow")
            for o in page.get("Contents", [])]  # fmt: skip
    for model in ("nightrec-retrieval", "nightrec-ranking"):
        version = client.get_model_version_by_alias(model, "challenger")
        model_id = version.model_id or version.source.removeprefix("models:/")
        logged = client.get_logged_model(model_id)
        assert logged.artifact_location.startswith("mlflow-artifacts:"), logged.artifact_location
        assert any(k.endswith("MLmodel") and model_id in k for k in keys), (model, keys[:20])
        # trained by torchrun on the gpu pool's worker, two processes
        assert client.get_run(version.run_id).data.tags["nightrec.world_size"] == "2", model

    live, _ = _live(stack, monkeypatch)
    assert live.ds == NIGHT_1 and live.generation == 1
    # Tracked and published only through the servers: no local artifact folder or store beside the lake.
    data = stack.home / "data"
    assert not [p.name for p in data.iterdir() if p.name in ("mlartifacts", "mlruns", "store")], sorted(
        data.iterdir()
    )
    # The API serves what was published (it follows the pointer in S3).
    deadline = time.monotonic() + 60
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(stack.url("api") + "/readyz", timeout=5) as r:
                assert r.status == 200
                break
        except OSError:
            assert time.monotonic() < deadline, "the API never loaded the published snapshot"
            time.sleep(1)


# ---- night 2: a Spark worker is lost in the middle of build-features ----------------------------------------


def test_night_2_completes_when_a_spark_worker_dies_during_build_features(stack, monkeypatch):
    before, _ = _live(stack, monkeypatch)
    _trigger(stack, "validate-raw/validate-raw", {"data": str(stack.home / "raw-next")})
    from tests.integration.polling import client_of

    # Kill worker 1 (and its executor JVM) once build-features has executors at work.
    deadline = time.monotonic() + 300
    with client_of(_prefect(stack)) as client:
        while True:
            assert time.monotonic() < deadline, "build-features never ran on the cluster"
            running = [r for r in _runs(client, "build-features", NIGHT_2) if r.state.is_running()]
            apps = stack.spark_state()["activeapps"]
            executors = list((stack.home / "spark" / "spark-worker-1").glob("app-*/*/stderr"))
            if running and apps and any(apps[0]["id"] in str(e) for e in executors):
                break
            time.sleep(0.5)
    time.sleep(3)  # into its jobs
    killed = stack.kill("spark-worker-1")
    assert len(killed) >= 2, "the worker and its executor"
    assert stack.alive_spark_workers() <= 1 or _dead_soon(stack)

    _wait_published(stack, NIGHT_2, 900)
    live, _ = _live(stack, monkeypatch)
    assert live.ds == NIGHT_2 and live.previous == before.manifest_key  # the pointer moved forward
    stack.up(only=["spark-worker-1"])  # as an operator would bring the machine back
    assert stack.alive_spark_workers() == 2


def _dead_soon(stack: Stack) -> bool:
    deadline = time.monotonic() + 90  # the master notices a lost worker by its missed heartbeats
    while time.monotonic() < deadline:
        if stack.alive_spark_workers() <= 1:
            return True
        time.sleep(2)
    return False


# ---- the batch worker is lost in the middle of precompute; the next trigger resumes -----------------------


def test_a_lost_batch_worker_is_resumed_by_the_next_trigger(stack, monkeypatch, tmp_path):
    before, _ = _live(stack, monkeypatch)
    mark = tmp_path / "precompute-hangs"
    stack.stop("worker-batch")
    # Night 3's precompute stops after its first part of lists, as if its machine froze there.
    fault = {"NIGHTREC_FAULT": "precompute.after_part:0:hang", "NIGHTREC_FAULT_MARK": str(mark)}
    stack.start("worker-batch", fault)
    raw3 = str(stack.home / "raw-third")
    _trigger(stack, "validate-raw/validate-raw", {"data": raw3})
    deadline = time.monotonic() + 600
    while not mark.exists():
        assert time.monotonic() < deadline, "night 3 never reached its first part of lists"
        time.sleep(0.5)
    from tests.integration.polling import client_of

    with client_of(_prefect(stack)) as client:
        (lost,) = [r.id for r in _runs(client, "precompute", NIGHT_3)]
    flow_pid = int(mark.read_text())
    killed = stack.kill("worker-batch")
    assert flow_pid in killed, "the flow run died with its worker, as on a lost machine"

    # Nothing of the half-done night is live; Prefect still thinks it runs (no process is left to say).
    live, _ = _live(stack, monkeypatch)
    assert live.manifest_key == before.manifest_key
    stack.up(only=["worker-batch"])  # the machine is back: the worker restarts without the failpoint
    # The next trigger, from the stage that was lost, waits for the deployment's slot (the zombie automation
    # frees it), then resumes the night: precompute anew, then the rest of the chain.
    _trigger(stack, "precompute/precompute", {"data": raw3, "run_date": NIGHT_3.isoformat()})
    _wait_published(stack, NIGHT_3, ZOMBIE_WITHIN_S + 600)
    live, _ = _live(stack, monkeypatch)
    assert live.ds == NIGHT_3 and live.previous == before.manifest_key
    # The deployment's slot came back when the lost run's lease expired; the run itself is marked Crashed
    # once its heartbeats have been missing for the automation's window (it may outlast the resumed night).
    wait_for(
        _prefect(stack),
        lambda client: client.read_flow_run(lost).state.is_crashed(),
        ZOMBIE_WITHIN_S + 180,
        "the zombie automation to mark the lost precompute run Crashed",
    )


def test_stack_status_reports_a_stopped_service(stack):
    stack.stop("api")
    rows = {name: state for name, state, _, _ in stack.status()}
    assert rows["api"] == "stopped" and rows["prefect-server"] == "running"
    status = _cli("stack", "status", "--home", str(stack.home))
    assert status.returncode == 1 and re.search(r"api\s+.*stopped", status.stdout), status.stdout
    up = _cli("stack", "up", "--home", str(stack.home))  # brings back what is down, leaves the rest
    assert up.returncode == 0 and "api up in" in up.stdout and "postgres up" not in up.stdout, up.stdout
    now = Stack.open(stack.home)
    assert {state for _, state, _, _ in now.status()} == {"running"}
    assert _cli("stack", "status", "--home", str(stack.home)).returncode == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NIGHTREC_", "PREFECT_"))}
    env |= {"COLUMNS": "200", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "nightrec.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
