"""Lake layout: ``<lake>/<table>/ds=YYYY-MM-DD/`` plus a ``_MARKER.json`` written last.

A partition without a marker is treated as absent: a killed write never looks complete to a reader. The marker
records the fingerprint of the inputs and parameters that produced it, so a re-run with the same inputs can skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable
from datetime import UTC, date, datetime
from pathlib import Path

from nightrec import faults
from nightrec.errors import StageInputMissing
from nightrec.io import disk

MARKER = "_MARKER.json"
# The failpoint seam lives in nightrec.faults; re-exported for the tests of scenario 11.
FAULT_ENV, InjectedFault = faults.FAULT_ENV, faults.InjectedFault


# The recs gate's verdict, left beside the lists it judged; publish refuses lists without a passing one.
VERDICT = "_VALIDATION.json"
# The night report (evaluation.night_report), written there by the recs gate and published beside the snapshot.
NIGHT_REPORT = "_REPORT.html"
COLDSTART = "_COLDSTART.parquet"  # beside the recs partition's parts (readers of the parts skip "_" files)


# The live policy's held-out figures by slice (evaluation.slices), written by evaluate_and_promote.
SLICES = "slices.json"


def evaluation_path(lake: str | Path, ds: date) -> Path:
    """Where evaluate_and_promote leaves what the night report reads (not a table: no marker)."""
    return Path(lake) / "_evaluation" / f"ds={ds.isoformat()}"


def partition_path(lake: str | Path, table: str, ds: date) -> Path:
    return Path(lake) / table / f"ds={ds.isoformat()}"


def read_marker(path: Path) -> dict | None:
    try:
        return json.loads((path / MARKER).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_json(path: Path, body: dict, *, sort_keys: bool = False) -> None:
    """Write ``body`` to ``path`` whole or not at all (a temp file renamed over it): a reader, or a stage that
    skips on what it finds, never sees half a file. A full disk raises ``DiskFull`` naming ``path``."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        with disk.writing(path):
            tmp.write_text(json.dumps(body, indent=2, default=str, sort_keys=sort_keys))
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_marker(path: Path, fingerprint: str, **meta) -> None:
    write_json(
        path / MARKER, {"fingerprint": fingerprint, "written_at": datetime.now(UTC).isoformat(), **meta}
    )


def is_complete(lake: str | Path, table: str, ds: date, fingerprint: str | None = None) -> bool:
    marker = read_marker(partition_path(lake, table, ds))
    return marker is not None and (fingerprint is None or marker.get("fingerprint") == fingerprint)


def require_partition(lake: str | Path, table: str, ds: date) -> Path:
    """The path of a complete partition.

    Raises:
        StageInputMissing: the partition is absent or was never completed (no marker).
    """
    path = partition_path(lake, table, ds)
    if read_marker(path) is None:
        state = "has no completion marker (a killed or failed write?)" if path.exists() else "does not exist"
        raise StageInputMissing(
            f"lake table {table!r} partition {path} {state}; run the stage that builds it"
        )
    return path


def staging_path(lake: str | Path, table: str, ds: date) -> Path:
    return Path(lake) / table / "_staging" / f"ds={ds.isoformat()}-{uuid.uuid4().hex[:8]}"


def clear_staging(lake: str | Path, table: str, ds: date) -> None:
    """Remove staging folders a killed writer of this partition left behind (one writer per partition)."""
    for p in (Path(lake) / table / "_staging").glob(f"ds={ds.isoformat()}-*"):
        shutil.rmtree(p, ignore_errors=True)


def clear_all_staging(lake: str | Path, ds: date) -> None:
    """Remove every table's staging folders of ``ds`` (the night that writes ``ds`` has ended or died)."""
    root = Path(lake)
    if root.exists():
        # A channel's lists are the table channels/<channel>/recs (Settings.recs_table).
        for table in (*root.iterdir(), *root.glob("channels/*/*")):
            if (table / "_staging").is_dir():
                clear_staging(root, str(table.relative_to(root)), ds)


def commit_staging(staging: Path, final: Path) -> None:
    """Swap a fully written staging folder into place; the old partition is removed only after the swap."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def latest_complete(lake: str | Path, table: str, before: date | None = None) -> date | None:
    """The newest ds of ``table`` with a marker, strictly before ``before`` when given."""
    root = Path(lake) / table
    if not root.exists():
        return None
    found = []
    for p in root.glob("ds=*"):
        try:
            ds = date.fromisoformat(p.name[3:])
        except ValueError:
            continue
        if (before is None or ds < before) and read_marker(p) is not None:
            found.append(ds)
    return max(found) if found else None


def fingerprint_files(paths: Iterable[Path], extra: dict | None = None) -> str:
    """sha256 over the relative names and contents of data files (and a params dict)."""
    h = hashlib.sha256()
    for root in paths:
        root = Path(root)
        files = sorted(f for f in root.rglob("*") if f.is_file() and not f.name.startswith((".", "_")))
        for f in files:
            h.update(str(f.relative_to(root.parent)).encode())
            with f.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    if extra:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
