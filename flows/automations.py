"""The automations of prefect.yaml (its top-level ``automations:`` list), applied to a server idempotently.

`prefect deploy` reads only ``deployments:`` and ignores the rest; the automations beside them are server
objects of their own. ``prefect automation create --from-file prefect.yaml`` creates them once (run twice, it
makes duplicates); :func:`apply_automations` creates each one that is missing and updates the one of the same
name otherwise. `nightrec serve` applies them; against your own server:

    PREFECT_API_URL=http://prefect:4200/api python -m flows.automations

It uses Prefect's own client (its retries of a busy server's 429/502/503 included), and each spec is checked
against Prefect's automation model before anything is sent, so a typo in prefect.yaml fails with its field path.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import yaml
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.events.schemas.automations import Automation, AutomationCore
from prefect.settings import PREFECT_API_URL, temporary_settings

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "prefect.yaml"
ZOMBIE_AUTOMATION = "nightrec-crash-zombie-flow-runs"


def automations(prefect_yaml: Path = PREFECT_YAML) -> list[dict]:
    """The automation specs of prefect.yaml (the documents `prefect automation create -f` reads)."""
    return list(yaml.safe_load(Path(prefect_yaml).read_text()).get("automations") or [])


def automation(name: str, prefect_yaml: Path = PREFECT_YAML) -> dict:
    """One automation spec of prefect.yaml by name (a copy: change it freely before applying)."""
    for spec in automations(prefect_yaml):
        if spec["name"] == name:
            return json.loads(json.dumps(spec))
    raise KeyError(f"no automation named {name!r} in {prefect_yaml}")


@contextmanager
def _client(api_url: str | None) -> Iterator[SyncPrefectClient]:
    """Prefect's client for ``api_url`` (default: the configured PREFECT_API_URL)."""
    if api_url is None:
        with get_client(sync_client=True) as client:
            yield client
        return
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        yield client


def find_automations(api_url: str | None, name: str) -> list[Automation]:
    """The automations of that name on the server (normally zero or one)."""
    with _client(api_url) as client:
        return client.read_automations_by_name(name)


def apply_automations(api_url: str | None = None, specs: list[dict] | None = None) -> dict[str, UUID]:
    """Create or update each automation (default: all of prefect.yaml); a name is never duplicated.

    Returns:
        ``{name: automation id}``.
    """
    cores = [AutomationCore.model_validate(spec) for spec in (automations() if specs is None else specs)]
    applied: dict[str, UUID] = {}
    with _client(api_url) as client:
        for core in cores:
            existing = client.read_automations_by_name(core.name)
            if existing:
                first, *extra = existing  # the most recently updated first
                client.update_automation(first.id, core)
                for dup in extra:  # left by an earlier `prefect automation create` run twice
                    client.delete_automation(dup.id)
                applied[core.name] = first.id
            else:
                applied[core.name] = client.create_automation(core)
    return applied


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--api-url", default=os.environ.get("PREFECT_API_URL"), help="default: $PREFECT_API_URL"
    )
    args = parser.parse_args(argv)
    if not args.api_url:
        parser.error("set PREFECT_API_URL or pass --api-url")
    try:
        applied = apply_automations(args.api_url)
    except Exception as e:  # one line for the operator: what failed and against which server
        parser.exit(1, f"applying the automations of {PREFECT_YAML} to {args.api_url} failed: {e}\n")
    for name, automation_id in applied.items():
        print(f"{name}: {automation_id}")


if __name__ == "__main__":
    main()
