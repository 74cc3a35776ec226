"""A memory cgroup for one process tree (v1 or v2, whichever this machine mounts): the kernel's bound, not ours."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


class MemoryCgroup:
    def __init__(self, path: Path, v2: bool):
        self.path, self.v2 = path, v2

    def join(self) -> None:
        """Move the calling process into the group (a ``preexec_fn``: the child and all it starts are in it)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def peak_bytes(self) -> int:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        return int((self.path / name).read_text())

    def oom_kills(self) -> int:
        text = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        counts = dict(line.split() for line in text.splitlines() if len(line.split()) == 2)
        return int(counts.get("oom_kill", 0))


def _usable() -> tuple[Path, bool] | None:
    if (V2 / "cgroup.controllers").exists() and "memory" in (V2 / "cgroup.subtree_control").read_text():
        return V2, True
    if (V1 / "memory.limit_in_bytes").exists():
        return V1, False
    return None


@contextmanager
def memory_cgroup(limit_bytes: int):
    """A fresh memory cgroup limited to ``limit_bytes`` (swap too, where the kernel accounts it), removed after.

    Raises:
        PermissionError / FileNotFoundError / OSError: no cgroup can be made here (not root, no controller).
    """
    found = _usable()
    if found is None:
        raise FileNotFoundError("no memory cgroup controller mounted")
    root, v2 = found
    path = root / f"nightrec-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        if v2:
            (path / "memory.max").write_text(str(limit_bytes))
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")
        else:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            if (path / "memory.memsw.limit_in_bytes").exists():
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
        yield MemoryCgroup(path, v2)
    finally:
        # Empty once the tree has exited; whatever is left goes back to the parent so the group can go.
        for pid in (path / "cgroup.procs").read_text().split():
            try:
                (root / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        path.rmdir()
