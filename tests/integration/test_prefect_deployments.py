"""Both deployment shapes on a real Prefect server: `prefect deploy --all`, process workers, UI-style triggers.

Monolith: `prefect deployment run nightly/nightly` (what the UI's Run button does) completes and publishes.
Modular: triggering the first stage's deployment runs every stage deployment in DAG order on its own pool,
each started by the previous one's completion event, and publishes the next snapshot generation; a repeated
trigger does nothing.
"""

from __future__ import annotations

import time
from itertools import pairwise

import pytest
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

from flows.chain import DUPLICATE
from nightrec.data import synthetic
from nightrec.io.store import open_store
from nightrec.ops.local_stack import local_stack
from nightrec.publish import pointer
from nightrec.settings import Settings
from schemas.params import STAGES
from tests.integration.polling import client_of, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

RUN_DATE = "2026-11-22"
STAGE_DEPLOYMENTS = [s.replace("_", "-") for s in STAGES]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    raw = root / "raw"
    synthetic.generate(600, 200, 40, raw, seed=11, events_per_user=50.0)
    env = {
        "NIGHTREC_SPARK__MASTER": "local[2]",
        "NIGHTREC_SPARK__DRIVER_MEMORY": "2g",
        "NIGHTREC_SPARK__SHUFFLE_PARTITIONS": "2",
        "NIGHTREC_TRAIN__RETRIEVAL_EPOCHS": "4",
        "NIGHTREC_TRAIN__RANKING_EPOCHS": "2",
        "NIGHTREC_FEATURES__HOLDOUT_DAYS": "5",
        "NIGHTREC_FEATURES__VALID_DAYS": "5",
        "NIGHTREC_SCORING__TOP_K": "10",
    }
    with local_stack(root / "home", extra_env=env) as s:
        s.raw, s.home = raw, root / "home"
        yield s


def _trigger(stack, deployment: str, *, run_date: str | None = RUN_DATE, **others) -> str:
    """Start a run the way the UI does: the server validates the parameters against the flow's schema."""
    given = {"data": str(stack.raw)} | ({"run_date": run_date} if run_date else {})
    return stack.run_deployment(deployment, given, **others)


def _runs_of(client, deployment: str):
    name = deployment.split("/")[-1]
    return client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))


def _live(stack):
    return pointer.read_live(open_store(Settings(home=stack.home).store))


def test_the_scheduler_creates_the_nightly_cron_runs(stack):
    # A pin of SQLAlchemy 2.1 once broke Prefect's scheduler service ("Can't evaluate bulk DML statement"):
    # the deployments looked fine and the cron never fired.
    def scheduled(client):
        runs = [r for r in _runs_of(client, "nightly/nightly") if r.state and r.state.is_scheduled()]
        return runs if len(runs) >= 2 else None

    runs = wait_for(stack, scheduled, 120, "the scheduler to create nightly runs")
    starts = sorted(r.expected_start_time for r in runs)
    assert all((t.hour, t.minute) == (2, 0) and t.utcoffset().total_seconds() == 0 for t in starts)
    assert (starts[1] - starts[0]).total_seconds() == 86_400


def test_ui_trigger_of_nightly_runs_on_a_worker_and_publishes(stack):
    t0 = time.time()
    run_id = _trigger(stack, "nightly/nightly")
    # What run_deployment falls back on when the CLI outlasts its timeout finds this run, not the cron's.
    assert stack.find_manual_run("nightly", t0, timeout_s=120) == run_id

    def finished(client):
        run = client.read_flow_run(run_id)
        return run if run.state.is_final() else None

    run = wait_for(stack, finished, 600, "nightly to finish")
    assert run.state.is_completed(), run.state
    assert run.name == f"nightly-{RUN_DATE}"
    live, _ = _live(stack)
    assert live.generation == 1 and str(live.ds) == RUN_DATE


def test_modular_chain_runs_each_stage_deployment_in_order_and_publishes(stack):
    # Usually the monolith test above published generation 1; this test stands on its own if it did not.
    before = _live(stack)
    before_generation, before_key = (before[0].generation, before[0].manifest_key) if before else (0, None)
    # No date given: the first stage chooses it (the day after the newest event, RUN_DATE) and records it on its
    # run; no later stage chooses again.
    _trigger(stack, "validate-raw/validate-raw", run_date=None)

    def published(client):
        runs = _runs_of(client, "publish")
        return runs if runs and runs[0].state.is_final() else None

    def failed_stage(client):
        for name in STAGE_DEPLOYMENTS:
            for r in _runs_of(client, name):
                if r.state.is_final() and not r.state.is_completed():
                    raise AssertionError(f"stage deployment {name} ended {r.state.type}: {r.state.message}")
        return published(client)

    # Usually one publish run; two when a trigger fired twice (below), so take the runs, not exactly one.
    publish_runs = wait_for(stack, failed_stage, 900, "the modular chain to reach publish")
    assert publish_runs[0].state.is_completed(), publish_runs[0].state

    # Prefect's event triggers are at-least-once: on a busy SQLite server a completion event can fire its trigger
    # twice (a CI run saw one build-features start four validate-features). A repeat finds the first run started
    # by the same completion (the trigger's `triggered_by`) and ends `Duplicate` without working or triggering,
    # so each stage has exactly one working run, started by the previous stage's working run. Repeats queue
    # behind the chain (one slot per deployment); they get 240 s to finish.
    def all_final(client):
        runs = {name: _runs_of(client, name) for name in STAGE_DEPLOYMENTS}
        return runs if all(r.state.is_final() for rs in runs.values() for r in rs) else None

    try:
        runs = wait_for(stack, all_final, 240, "every stage run to finish")
    except AssertionError:
        with client_of(stack) as client:
            runs = {name: _runs_of(client, name) for name in STAGE_DEPLOYMENTS}
    summary = {name: [(r.name, r.state_name, str(r.created)) for r in rs] for name, rs in runs.items()}
    finished = [r for rs in runs.values() for r in rs if r.state.is_final()]
    assert all(r.state.is_completed() for r in finished), summary
    working = {name: [r for r in rs if r.state_name != DUPLICATE] for name, rs in runs.items()}
    assert all(len(rs) == 1 for rs in working.values()), summary
    runs = {name: rs[0] for name, rs in working.items()}
    for prev, stage in pairwise(STAGE_DEPLOYMENTS):
        assert runs[stage].start_time >= runs[prev].end_time, (
            f"{stage} started before {prev} completed: {summary}"
        )
        assert runs[stage].parameters["triggered_by"] == str(runs[prev].id), summary
    # Each stage got the date the first one chose, from the previous one's completion event.
    assert {runs[n].parameters["params"]["run_date"] for n in STAGE_DEPLOYMENTS} == {RUN_DATE}
    live, _ = _live(stack)
    assert live.generation == before_generation + 1 and live.previous == before_key


def test_a_repeated_trigger_does_nothing_and_starts_nothing(stack):
    """Two runs of `publish` started by one completion (as a re-delivered event makes them): one publishes."""
    before, _ = _live(stack)
    upstream = "0f0f0f0f-0000-4000-8000-000000000001"  # the id of the completed run the trigger would pass
    first = _trigger(stack, "publish/publish", run_date=RUN_DATE, triggered_by=upstream)
    second = _trigger(stack, "publish/publish", run_date=RUN_DATE, triggered_by=upstream)

    def both_final(client):
        runs = [client.read_flow_run(r) for r in (first, second)]
        return runs if all(r.state.is_final() for r in runs) else None

    one, two = wait_for(stack, both_final, 300, "both publish runs to finish")
    assert one.state.is_completed() and one.state_name == "Completed", one.state
    assert two.state.is_completed() and two.state_name == DUPLICATE, two.state
    assert str(one.id) in two.state.message
    live, _ = _live(stack)
    assert live.generation == before.generation + 1  # published once, not twice
