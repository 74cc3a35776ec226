"""Write raw tables (events, items, users) as contract-conformed Parquet, CSV or JSON Lines parts under
``OUT/<table>/``.

The CSV form is the one ``nightrec.io.raw`` reads back: tags '|'-joined, attributes a JSON object string,
timestamps ISO-8601 in UTC with a trailing ``Z``, booleans ``true``/``false``, nulls as empty fields.
JSON Lines hold one object per row with JSON's own types: tags an array, attributes an object, booleans and
numbers unquoted, nulls ``null``, timestamps the same strings as in CSV.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemas.arrow import arrow_type, conform_arrow
from schemas.tables import Table

FORMATS = ("parquet", "csv", "jsonl")


def check_format(fmt: str) -> str:
    """Return ``fmt`` if it is a supported output format.

    Raises:
        ValueError: ``fmt`` is not ``parquet``, ``csv`` or ``jsonl``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {FORMATS}")
    return fmt


def prepare_table_dir(out: Path, table: Table) -> Path:
    """Create ``out/<table>/`` and remove parts a previous run left there, so no stale part is read back."""
    folder = Path(out) / table.name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("part-*"):
        old.unlink()
    return folder


def write_part(tbl: pa.Table, out: Path, table: Table, part: int, fmt: str = "parquet") -> Path:
    """Conform ``tbl`` to ``table`` and write it as ``out/<table>/part-NNNNN.<fmt>``.

    Args:
        tbl: Arrow table holding at least the contract's columns.
        out: Raw data root.
        table: The contract (``schemas.tables.EVENTS``, ``ITEMS`` or ``USERS``).
        part: Part number, zero-padded in the file name.
        fmt: ``parquet``, ``csv`` or ``jsonl``.

    Returns:
        The path written.
    """
    conformed = conform_arrow(tbl, table)
    path = Path(out) / table.name / f"part-{part:05d}.{check_format(fmt)}"
    if fmt == "parquet":
        pq.write_table(conformed, path)
    elif fmt == "csv":
        pacsv.write_csv(to_csv_table(conformed), path)
    else:
        write_jsonl(conformed, path)
    return path


def write_table(tbl: pa.Table, out: Path, table: Table, fmt: str = "parquet") -> Path:
    """Replace ``out/<table>/`` with one part holding ``tbl``; returns the table folder."""
    folder = prepare_table_dir(out, table)
    write_part(tbl, out, table, 0, fmt)
    return folder


def string_ids(prefix: str, n: int) -> pa.Array:
    """``n`` ids ``prefix`` + zero-padded index (``u000``, ``u001``, ...), so they sort like their index."""
    width = len(str(max(n - 1, 0)))
    return pa.array([f"{prefix}{i:0{width}d}" for i in range(n)], pa.string())


def timestamps(us: np.ndarray) -> pa.Array:
    """Microseconds since the epoch as the contract's UTC timestamp type."""
    return pa.array(np.asarray(us, dtype=np.int64), type=arrow_type("timestamp"))


def constant_key_map(keys: tuple[str, ...], values: list[pa.Array], n: int) -> pa.MapArray:
    """A map<string,string> column with the same ``keys`` on each of ``n`` rows (``values[k]``: key k's)."""
    k = len(keys)
    offsets = pa.array(np.arange(0, k * n + 1, k, dtype=np.int32))
    row_major = pc.take(pa.concat_arrays(values), pa.array(np.arange(k * n).reshape(k, n).T.ravel()))
    return pa.MapArray.from_arrays(
        offsets, pa.array(np.tile(np.array(keys, dtype=object), n), pa.string()), row_major
    )


def to_csv_table(tbl: pa.Table) -> pa.Table:
    """Turn the columns CSV cannot hold (lists, maps, timestamps) into their agreed string forms."""
    columns = [_csv_column(col) for col in tbl.columns]
    return pa.table(columns, names=tbl.column_names)


def write_jsonl(tbl: pa.Table, path: Path) -> None:
    """Write ``tbl`` as JSON Lines: one object a row, timestamps as in CSV, maps as JSON objects."""
    maps = [f.name for f in tbl.schema if pa.types.is_map(f.type)]
    stamped = pa.table(
        [_csv_column(c) if pa.types.is_timestamp(c.type) else c for c in tbl.columns], names=tbl.column_names
    )
    with Path(path).open("w", encoding="utf-8") as f:
        for batch in stamped.to_batches(max_chunksize=65_536):
            for row in batch.to_pylist():
                for m in maps:
                    row[m] = None if row[m] is None else dict(row[m])
                f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def _csv_column(col: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    t = col.type
    if pa.types.is_timestamp(t):
        # %S prints the fractional seconds at the column's unit, so microseconds survive the round trip.
        utc = col.cast(pa.timestamp(t.unit, tz="UTC"))
        return pc.strftime(utc, format="%Y-%m-%dT%H:%M:%SZ")
    if pa.types.is_map(t):
        return pa.array([None if m is None else json.dumps(dict(m), sort_keys=True) for m in col.to_pylist()])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pc.binary_join(col, "|")
    return col
