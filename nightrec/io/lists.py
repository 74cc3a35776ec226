"""Arrow list columns as padded NumPy matrices (histories, tags), for the trainer and the scorer alike."""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def pad_lists(col: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """``list<int>`` -> int64 ``[n, width]``, 0-padded and truncated to ``width``, via the list offsets."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    out = np.zeros((n, width), dtype=np.int64)
    if n == 0:
        return out
    # Offsets index ``arr.values`` absolutely (also for a sliced array); a null list reads as empty.
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    values = np.asarray(arr.values.fill_null(0), dtype=np.int64)
    valid = np.asarray(arr.is_valid(), dtype=bool)
    lengths = np.where(valid, np.minimum(np.diff(offsets), width), 0)
    rows = np.repeat(np.arange(n), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    cols = np.arange(int(lengths.sum())) - starts
    out[rows, cols] = values[np.repeat(offsets[:-1], lengths) + cols]
    return out
