"""String columns as integer codes: what the night report and the API index lists by."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def encode(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """A string column as (distinct values, each row's code into them).

    A column read as dictionaries from Parquet (``read_dictionary``) keeps the file's own encoding: only the
    distinct dictionaries are hashed (every batch of a row group shares its dictionary's buffers), not every
    row, which is most of the cost at 20M rows. A plain column is hashed row by row (Arrow).
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    if not chunks or not pa.types.is_dictionary(chunks[0].type):
        enc = pc.dictionary_encode(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        return enc.dictionary, enc.indices.to_numpy().astype(np.int64)

    where: dict[tuple[int, ...], int] = {}  # a dictionary's buffers -> its place among the distinct ones
    dictionaries: list[pa.Array] = []
    place = []
    for chunk in chunks:
        key = (
            *(b.address if b is not None else 0 for b in chunk.dictionary.buffers()),
            len(chunk.dictionary),
        )
        if key not in where:
            where[key] = len(dictionaries)
            dictionaries.append(chunk.dictionary)
        place.append(where[key])
    joint = pc.dictionary_encode(pa.concat_arrays(dictionaries))
    code = joint.indices.to_numpy().astype(np.int64)
    start = np.cumsum([0] + [len(d) for d in dictionaries])
    rows = [
        code[start[j] : start[j + 1]][chunk.indices.to_numpy(zero_copy_only=False)]
        for chunk, j in zip(chunks, place, strict=True)
    ]
    return joint.dictionary, np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
