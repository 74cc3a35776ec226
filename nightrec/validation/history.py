"""Statistics of past runs for the volume and drift checks, kept in the lake under ``_gate_stats/``.

Each gate leaves its statistics as pending (``_gate_stats/_pending/ds=.../<gate>.json``); only a run whose
every gate passed commits them to ``_gate_stats/ds=.../stats.json``, so a bad night never becomes the baseline
that the next night is compared with.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

from nightrec.io import lake as lake_io

ROOT = "_gate_stats"
PENDING = "_pending"


def _dir(lake: str | Path, ds: date) -> Path:
    return Path(lake) / ROOT / f"ds={ds.isoformat()}"


def _atomic_write(path: Path, body: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lake_io.write_json(path, body, sort_keys=True)


def save_pending(lake: str | Path, ds: date, gate: str, stats: dict) -> None:
    """Leave one gate's statistics for ``ds`` until the run commits them."""
    _atomic_write(Path(lake) / ROOT / PENDING / f"ds={ds.isoformat()}" / f"{gate}.json", stats)


def commit(lake: str | Path, ds: date) -> Path | None:
    """Make the pending statistics of ``ds`` part of the history (call once every gate of the run passed)."""
    pending = Path(lake) / ROOT / PENDING / f"ds={ds.isoformat()}"
    if not pending.is_dir():
        return None
    body = {p.stem: json.loads(p.read_text()) for p in sorted(pending.glob("*.json"))}
    target = _dir(lake, ds) / "stats.json"
    save(lake, ds, body)
    shutil.rmtree(pending, ignore_errors=True)
    return target


def save(lake: str | Path, ds: date, body: dict) -> None:
    """Write the committed statistics of ``ds`` (``{gate: stats}``), replacing a previous run of that date."""
    _atomic_write(_dir(lake, ds) / "stats.json", body)


def load(lake: str | Path, before: date, n: int) -> list[dict]:
    """The committed statistics of the last ``n`` run dates before ``before``, newest first."""
    root = Path(lake) / ROOT
    if not root.is_dir():
        return []
    dates = sorted(
        (date.fromisoformat(p.name[3:]) for p in root.glob("ds=*") if (p / "stats.json").exists()),
        reverse=True,
    )
    return [
        json.loads((_dir(lake, d) / "stats.json").read_text()) | {"ds": d.isoformat()}
        for d in [d for d in dates if d < before][:n]
    ]
