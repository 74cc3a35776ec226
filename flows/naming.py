"""Flow run names that say the stage and the date (shown in the Prefect UI)."""

from __future__ import annotations

from collections.abc import Callable


def run_name(stage: str) -> Callable[[], str]:
    def _name() -> str:
        from prefect.runtime import flow_run

        given = flow_run.parameters or {}
        if given.get("start") and given.get("end"):
            return f"{stage}-{given['start']}..{given['end']}"
        p = given.get("params")
        ds = p.get("run_date") if isinstance(p, dict) else getattr(p, "run_date", None)
        return f"{stage}-{ds or 'latest'}"

    return _name
