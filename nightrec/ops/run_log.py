"""The night's log file: where library output and tracebacks go, so the terminal shows one message per failure.

A night in one process prints through many channels: Prefect's console handler (a traceback per failed task
and flow run), MLflow's own stream handler and ``eprint``, and the Spark JVM, a child process writing to file
descriptor 2. Redirecting descriptor 2 itself is the one way that catches all of them, children included.
The terminal keeps a duplicate of the original descriptor for the progress lines.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO


def path_for(home: Path, run_date: date | None, kind: str = "nightly") -> Path:
    """``<home>/logs/<kind>-<run date or 'auto'>-<UTC time>.log``: one file per invocation."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(home) / "logs" / f"{kind}-{run_date or 'auto'}-{stamp}.log"


@contextmanager
def capture(path: Path, enabled: bool = True) -> Iterator[TextIO]:
    """Send descriptor 2 (``sys.stderr`` and every child process's stderr) to ``path`` inside the block.

    Yields a text stream on the original stderr, for what the user must see. With ``enabled`` False nothing
    is redirected and the stream is ``sys.stderr``.
    """
    if not enabled:
        yield sys.stderr
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    before = sys.stderr
    before.flush()
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
    with open(path, "a", buffering=1, encoding="utf-8", errors="replace") as log:
        os.dup2(log.fileno(), 2)
        # Where sys.stderr is not descriptor 2 (a test runner's capture, a notebook), the handlers that hold it
        # (Prefect's console, MLflow's) are pointed at the file too, and back afterwards.
        moved = [
            h
            for h in _stream_handlers()
            if h.stream in (before, sys.__stderr__) or getattr(h.stream, "closed", False)
        ]
        originals = [h.stream for h in moved]
        for h in moved:
            _point(h, log)
        sys.stderr = log
        try:
            yield terminal
        finally:
            sys.stderr = before
            for h, stream in zip(moved, originals, strict=True):
                # A stream swapped in for this call only (a test runner's) is closed soon after it returns, and
                # a handler left on it fails every later record: those go back to the process's own stderr.
                temporary = (stream is before and before is not sys.__stderr__) or getattr(
                    stream, "closed", False
                )
                _point(h, sys.__stderr__ if temporary else stream)
            log.flush()
            os.dup2(saved, 2)
            os.close(saved)
            terminal.close()


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    return [
        h
        for lg in loggers
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def write_traceback(path: Path) -> None:
    """Append the exception being handled, with its whole chain, to the log file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"\n=== nightly failed at {datetime.now(UTC).isoformat()} ===\n")
        traceback.print_exc(file=f)


def _point(handler: logging.StreamHandler, stream) -> None:
    handler.setStream(stream)
    console = getattr(handler, "console", None)  # Prefect's handler prints through a rich Console of its own
    if console is not None:
        console.file = stream
