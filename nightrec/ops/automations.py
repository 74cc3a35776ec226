"""The automations of prefect.yaml (its top-level ``automations:`` list), applied to a server idempotently.

`prefect deploy` reads only ``deployments:`` and ignores the rest; the automations beside them are server
objects of their own. ``prefect automation create --from-file prefect.yaml`` creates them once (run twice, it
makes duplicates); :func:`apply_automations` creates each one that is missing and updates the one of the same
name otherwise. `nightrec serve` applies them; against your own server:

    PREFECT_API_URL=http://prefect:4200/api python -m nightrec.ops.automations

It talks to the REST API with the standard library (this package never imports Prefect); the server validates
each automation against its own schema.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
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


# What Prefect's own client retries (PREFECT_CLIENT_RETRY_EXTRA_CODES aside): the server answers 503 when its
# SQLite database is locked (PrefectHQ/prefect#23051), which on a busy machine is a normal, passing state.
RETRY_STATUSES = frozenset({429, 502, 503, 504})


def _request(
    api_url: str,
    method: str,
    path: str,
    body: object | None = None,
    timeout_s: float = 30,
    retries: int = 6,
    backoff_s: float = 0.5,
) -> object:
    """One REST call; a retryable answer (``RETRY_STATUSES``) is retried with exponential backoff.

    Every call here is idempotent or guarded (the PUT replaces, the POST runs only after a filter found none).
    """
    req = urllib.request.Request(
        f"{api_url.rstrip('/')}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    if key := os.environ.get("PREFECT_API_KEY"):
        req.add_header("Authorization", f"Bearer {key}")
    elif auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                raw = resp.read()
            return json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:2000]
            if e.code in RETRY_STATUSES and attempt < retries:
                time.sleep(_retry_after(e) or backoff_s * 2**attempt)
                continue
            tried = f" (after {attempt + 1} attempts)" if attempt else ""
            raise RuntimeError(
                f"{method} {req.full_url} failed with HTTP {e.code}{tried}: {detail}"
            ) from None
        except urllib.error.URLError as e:
            raise RuntimeError(
                f"{method} {req.full_url} failed: {e.reason} (is the Prefect server up?)"
            ) from None
    raise AssertionError("unreachable")


def _retry_after(e: urllib.error.HTTPError) -> float | None:
    try:
        return min(float(e.headers.get("Retry-After", "")), 30.0)
    except ValueError:
        return None


def find_automations(api_url: str, name: str) -> list[dict]:
    """The automations of that name on the server (normally zero or one)."""
    found = _request(
        api_url, "POST", "/automations/filter", {"automations": {"name": {"any_": [name]}}, "limit": 200}
    )
    return list(found or [])  # type: ignore[arg-type]


def apply_automations(api_url: str, specs: list[dict] | None = None) -> dict[str, str]:
    """Create or update each automation (default: all of prefect.yaml); a name is never duplicated.

    Returns:
        ``{name: automation id}``.
    """
    applied = {}
    for spec in automations() if specs is None else specs:
        existing = find_automations(api_url, spec["name"])
        if existing:
            first, *extra = existing
            _request(api_url, "PUT", f"/automations/{first['id']}", spec)
            for dup in extra:  # left by an earlier `prefect automation create` run twice
                _request(api_url, "DELETE", f"/automations/{dup['id']}")
            applied[spec["name"]] = first["id"]
        else:
            created = _request(api_url, "POST", "/automations/", spec)
            applied[spec["name"]] = created["id"]  # type: ignore[index]
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
    except RuntimeError as e:
        parser.exit(1, f"{e}\n")
    for name, automation_id in applied.items():
        print(f"{name}: {automation_id}")


if __name__ == "__main__":
    main()
