"""Flow run names that say the stage and the date (shown in the Prefect UI)."""

from __future__ import annotations

from collections.abc import Callable


def run_name(stage: str) -> Callable[[], str]:
    def _name() -> str:
        from prefect.runtime import flow_run

        p = flow_run.parameters.get("params") if flow_run.parameters else None
        ds = p.get("run_date") if isinstance(p, dict) else getattr(p, "run_date", None)
        return f"{stage}-{ds or 'latest'}"

    return _name
