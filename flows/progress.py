"""A visible, compact progress line per stage (the CLI shows it; Prefect logs stay available with -v)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console

_console = Console(stderr=True, highlight=False)


def to_stream(stream=None) -> None:
    """Print the progress lines to ``stream`` (the CLI keeps them on the terminal while libraries log to a
    file); None = back to whatever ``sys.stderr`` is when a line is printed."""
    _console.file = stream


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


def skipped(name: str, index: int, total: int) -> None:
    _console.print(f"[dim]· [{index}/{total}] {name} skipped (not selected)[/]")
