"""Arrow forms of the contracts, for the pandas/numpy side (training, scoring, publish)."""

from __future__ import annotations

import pyarrow as pa

from schemas.tables import Table

_ARROW_TYPES = {
    "string": pa.string(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "array<string>": pa.list_(pa.string()),
    "array<int32>": pa.list_(pa.int32()),
    "map<string,string>": pa.map_(pa.string(), pa.string()),
}


def arrow_type(dtype: str) -> pa.DataType:
    return _ARROW_TYPES[dtype]


def to_arrow_schema(table: Table) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c.dtype), c.nullable) for c in table.columns])


def conform_arrow(tbl: pa.Table, table: Table) -> pa.Table:
    """Select and cast an Arrow table into contract order and types."""
    missing = [c for c in table.names if c not in tbl.column_names]
    if missing:
        raise ValueError(
            f"cannot write table {table.name!r}: missing columns {missing}; have {tbl.column_names}"
        )
    return tbl.select(table.names).cast(to_arrow_schema(table))
