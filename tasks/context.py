"""Settings and shared handles for tasks (built at the edge, from env + flow parameters)."""

from __future__ import annotations

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
