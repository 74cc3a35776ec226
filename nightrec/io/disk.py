"""Disk-full detection: one translation of ENOSPC-like failures, whichever library raised them.

Python raises ``OSError`` with an errno; pyarrow and Spark (through Py4J) often carry only the text. Either way
the caller gets ``DiskFull`` naming the path it was writing, and cleans up what it half wrote.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nightrec.errors import DiskFull

_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_TEXTS = ("No space left on device", "Disk quota exceeded", "File too large")


def no_space_reason(exc: BaseException) -> str | None:
    """The disk-full reason carried by ``exc`` or anything in its cause chain, else None."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _ERRNOS:
            return e.strerror or str(e)
        text = str(e)
        for t in _TEXTS:
            if t in text:
                return t
        e = e.__cause__ or e.__context__
    return None


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Re-raise a disk-full failure inside the block as ``DiskFull(path)``; other errors pass unchanged."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as e:
        reason = no_space_reason(e)
        if reason is None:
            raise
        raise DiskFull(str(path), reason) from e
