"""The exposure log: one JSON line per list served inside an experiment, written off the request path.

A request only appends a tuple to a queue; a writer thread turns batches into lines of
``exposures-<opened at>-<pid>-<n>.jsonl`` under the log folder, and starts a new file past ``rotate_bytes`` or
``rotate_s``. A file being written ends in ``.jsonl.open`` and is renamed when closed, so a reader of
``*.jsonl`` never sees half a file. ``close()`` (a clean shutdown) drains the queue first: nothing is lost.

Record: ``{"ts", "user_id", "experiment", "variant", "channel", "snapshot", "items"}`` (ts in ISO 8601 UTC,
items as served, best first).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

log = logging.getLogger(__name__)
SUFFIX = ".jsonl"
OPEN_SUFFIX = ".jsonl.open"


class ExposureLog:
    def __init__(self, folder: str | Path, *, rotate_bytes: int = 64 * 2**20, rotate_s: float = 3600.0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rotate_bytes, self.rotate_s = rotate_bytes, rotate_s
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="exposure-log", daemon=True)
        self._thread.start()

    def record(self, user_id: str, experiment: str, variant: str, channel: str, snapshot: str, items) -> None:
        """Queue one exposure (a few hundred nanoseconds; the writer thread does the rest)."""
        self._queue.put((time.time(), user_id, experiment, variant, channel, snapshot, items))

    def close(self) -> None:
        """Write everything queued, close the file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        handle, path, opened, size, seq = None, None, 0.0, 0, 0
        while True:
            batch = [self._queue.get()]
            while len(batch) < 4096:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is None
            for row in (r for r in batch if r is not None):
                if handle is None or size >= self.rotate_bytes or time.time() - opened >= self.rotate_s:
                    self._finish(handle, path)
                    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
                    seq += 1  # two files opened within one microsecond still get two names
                    path = self.folder / f"exposures-{stamp}-{os.getpid()}-{seq:06d}{OPEN_SUFFIX}"
                    handle, opened, size = path.open("ab"), time.time(), 0
                line = _line(row)
                handle.write(line)
                size += len(line)
                self.written += 1
            if handle is not None:
                handle.flush()  # a crash loses at most the batch being written
            if stop:
                self._finish(handle, path)
                return

    @staticmethod
    def _finish(handle, path: Path | None) -> None:
        if handle is None or path is None:
            return
        handle.close()
        path.rename(path.with_name(path.name.removesuffix(OPEN_SUFFIX) + SUFFIX))


def _line(r: tuple) -> bytes:
    ts, user_id, experiment, variant, channel, snapshot, items = r
    return orjson.dumps(
        {
            "ts": datetime.fromtimestamp(ts, UTC).isoformat(),
            "user_id": user_id,
            "experiment": experiment,
            "variant": variant,
            "channel": channel,
            "snapshot": snapshot,
            "items": items,
        },
        option=orjson.OPT_APPEND_NEWLINE,
    )


def read(folder: str | Path, *, include_open: bool = False) -> list[dict]:
    """Every exposure of the closed files in ``folder`` (and of the open ones with ``include_open``)."""
    out: list[dict] = []
    for p in sorted(Path(folder).glob(f"exposures-*{SUFFIX}*")):
        if p.name.endswith(SUFFIX) or (include_open and p.name.endswith(OPEN_SUFFIX)):
            out += [orjson.loads(line) for line in p.read_bytes().splitlines() if line.strip()]
    return out
