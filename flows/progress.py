"""A visible, compact progress line per stage (the CLI shows it; Prefect logs stay available with -v)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from rich.console import Console

_console = Console(stderr=True, highlight=False)


_detail = logging.getLogger("nightrec.progress")  # lines from inside a stage (training epochs)
_handler: logging.Handler | None = None


def to_stream(stream=None) -> None:
    """Print the progress lines, and the stages' own detail lines (``nightrec.progress``, e.g. each training
    epoch), to ``stream`` (the CLI keeps them on the terminal while libraries log to a file); None = back to
    whatever ``sys.stderr`` is when a line is printed, and no detail lines."""
    global _handler
    _console.file = stream
    if _handler is not None:
        _detail.removeHandler(_handler)
        _handler = None
    if stream is not None:
        _handler = logging.StreamHandler(stream)
        _handler.setFormatter(logging.Formatter("    %(message)s"))
        _detail.addHandler(_handler)
        _detail.setLevel(logging.INFO)


@contextmanager
def stage(name: str, index: int, total: int, seconds: dict[str, float] | None = None) -> Iterator[None]:
    """Print the stage's start and end; on success record its duration in ``seconds[name]``."""
    start = time.perf_counter()
    _console.print(f"[bold cyan]▶[/] [{index}/{total}] {name} …")
    try:
        yield
    except BaseException:
        _console.print(
            f"[bold red]✘[/] [{index}/{total}] {name} failed after {time.perf_counter() - start:.1f}s"
        )
        raise
    elapsed = time.perf_counter() - start
    if seconds is not None:
        seconds[name] = round(elapsed, 2)
    _console.print(f"[bold green]✔[/] [{index}/{total}] {name} [dim]{elapsed:.1f}s[/]")
    _run_log(f"stage {index}/{total} {name} done in {elapsed:.1f}s")


def _run_log(line: str) -> None:
    """The same line in the parent flow run's log (the Prefect UI), when there is a run."""
    try:
        get_run_logger().info(line)
    except MissingContextError:
        pass


def skipped(name: str, index: int, total: int) -> None:
    _console.print(f"[dim]· [{index}/{total}] {name} skipped (not selected)[/]")
