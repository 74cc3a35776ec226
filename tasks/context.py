"""Settings and shared handles for tasks (built at the edge, from env + flow parameters)."""

from __future__ import annotations

import re

from nightrec.settings import Settings, with_run_params
from schemas.params import NightlyParams


def settings_for(params: NightlyParams) -> Settings:
    return with_run_params(
        Settings(),
        data=params.data,
        top_k=params.top_k,
        retrieval_epochs=params.retrieval_epochs,
        ranking_epochs=params.ranking_epochs,
    )


def run_id() -> str:
    """The Prefect flow run id when inside one (the publish snapshot is named after it)."""
    from prefect.runtime import flow_run

    rid = flow_run.get_id()
    if rid:
        return str(rid)
    import uuid

    return uuid.uuid4().hex


def record_params(params: NightlyParams) -> None:
    """Write resolved parameters back onto the current flow run (a no-op outside one).

    The modular chain's trigger passes a stage's ``params`` from its flow run to the next stage, so the date
    the first stage chose travels down the chain; the run is renamed after that date in the UI too.
    """
    from prefect import get_run_logger
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    rid = flow_run.get_id()
    if not rid:
        return
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(rid)
            parameters = {**run.parameters, "params": params.model_dump(mode="json")}
            name = run.name
            if params.run_date is not None and name.endswith("-latest"):
                name = f"{name.removesuffix('-latest')}-{params.run_date}"
            client.update_flow_run(rid, parameters=parameters, name=name)
    except Exception as e:  # the stage itself is fine; later stages then read the date off the lake
        get_run_logger().warning("could not record the resolved parameters on flow run %s: %s", rid, e)


def artifact_key(text: str) -> str:
    """``text`` as a Prefect artifact key (lowercase letters, digits and dashes only)."""
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
