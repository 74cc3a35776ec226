"""The modular chain's guard against a trigger that fires twice for one completion of the previous stage.

Prefect delivers events at least once: when its trigger service fails part-way through an event (on a busy
SQLite server, "database is locked"), it handles the event again and starts the next stage a second time. Each
repeat completes and fires the stage after it again, so repeats multiply down the chain (a CI run saw one
build-features start four validate-features and the first publish queue behind them past its deadline).

Each trigger passes the previous run's id as ``triggered_by``. A run that finds an earlier run of its deployment
started by the same completion does nothing and ends ``Completed`` under the name ``Duplicate``: its event is
``prefect.flow-run.Duplicate``, which no trigger of the chain listens to, so the repeat stops there. A run started
by hand (no ``triggered_by``) or by another completion is never a duplicate.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.sorting import FlowRunSort
from prefect.states import Completed, State

DUPLICATE = "Duplicate"  # the state name of a repeat; its event (prefect.flow-run.Duplicate) triggers nothing
_RECENT_RUNS = 200  # a repeat is created seconds after the first: the deployment's newest runs hold it


def duplicate_of_earlier(triggered_by: str | None) -> State | None:
    """``Completed(name="Duplicate")`` when an earlier run of this deployment has the same ``triggered_by``.

    Of the runs sharing a ``triggered_by``, the first created (then the lowest id) is the one that works, so
    two repeats that start together agree on it. None outside a deployment run, or without ``triggered_by``.
    """
    from prefect.runtime import deployment, flow_run

    if not triggered_by or not deployment.id or not flow_run.id:
        return None
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=_RECENT_RUNS,
        )
    same = [r for r in runs if (r.parameters or {}).get("triggered_by") == triggered_by]
    first = min(same, key=lambda r: (r.created, str(r.id)), default=None)
    if first is None or str(first.id) == str(flow_run.id):
        return None
    return Completed(
        name=DUPLICATE,
        message=f"nothing done: run {first.name} ({first.id}) was started by the same completion "
        f"of the previous stage (flow run {triggered_by}); the trigger fired twice",
    )
