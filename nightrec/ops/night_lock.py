"""One night per run date at a time: a lock file in the lake, taken before the first stage.

Two runs of one date would write the same partitions; before this lock the loser failed deep inside Spark on
a staging folder the winner had swapped away, and left its own behind. Now the second run refuses at once,
naming the run that holds the date.

A holder that died (SIGKILL, a lost node) cannot release its lock, so a lock is taken over when it is stale:
on this host, when its process is gone; from another host, when its heartbeat (the file's modification time,
touched every ``HEARTBEAT_S``) is older than ``STALE_AFTER_S``. Releasing also removes the date's staging
folders, so no failure leaves one behind.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

from nightrec.errors import NightrecError
from nightrec.host import process_alive
from nightrec.io import lake

HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * 60.0
LOCKS = "_locks"


class NightAlreadyRunning(NightrecError):
    """Another live run holds this run date."""


def lock_path(lake_root: str | Path, ds: date) -> Path:
    return Path(lake_root) / LOCKS / f"night-{ds.isoformat()}.json"


def _stale(path: Path, holder: dict) -> bool:
    if holder.get("host") == socket.gethostname():
        return not process_alive(int(holder.get("pid") or 0))
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return True


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text() or "{}")
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _create(path: Path, body: dict) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        json.dump(body, fh)
    return True


def acquire(lake_root: str | Path, ds: date, run_id: str) -> dict:
    """Take the lock of ``ds`` for ``run_id``; returns the stale holder it replaced ({} when none).

    Raises:
        NightAlreadyRunning: a live run holds the date.
    """
    path = lock_path(lake_root, ds)
    body = {
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if _create(path, body):
        return {}
    holder = _read(path)
    if not _stale(path, holder):
        raise NightAlreadyRunning(
            f"night {ds} is already running as run {holder.get('run_id', '?')} (pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {holder.get('started_at')}). Wait for it to finish; if that run is "
            f"dead on another host, its lock {path} is taken over {STALE_AFTER_S / 60:.0f} min after its last "
            "heartbeat, or delete the file"
        )
    # Stale: move it aside atomically, so of two runs taking it over at once only one creates the new lock.
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:
        pass
    aside.unlink(missing_ok=True)
    if not _create(path, body):
        return acquire(lake_root, ds, run_id)  # another run took it first: report that one
    return holder


def release(lake_root: str | Path, ds: date, run_id: str) -> None:
    """Drop the lock if ``run_id`` still holds it, and the date's staging folders with it."""
    lake.clear_all_staging(lake_root, ds)
    path = lock_path(lake_root, ds)
    if _read(path).get("run_id") == run_id:
        path.unlink(missing_ok=True)


@contextmanager
def night_lock(lake_root: str | Path, ds: date, run_id: str) -> Iterator[dict]:
    """Hold the lock of ``ds`` for the block (see the module docstring); yields the stale holder replaced."""
    replaced = acquire(lake_root, ds, run_id)
    if replaced:
        lake.clear_all_staging(lake_root, ds)  # the dead holder's half-written partitions
    stop = threading.Event()
    path = lock_path(lake_root, ds)

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            try:
                os.utime(path)
            except FileNotFoundError:
                return

    thread = threading.Thread(target=beat, name=f"night-lock-{ds}", daemon=True)
    thread.start()
    try:
        yield replaced
    finally:
        stop.set()
        release(lake_root, ds, run_id)
