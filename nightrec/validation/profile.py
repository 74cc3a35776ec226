"""Statistics of raw and feature tables in as few Spark passes as possible (the inputs of the aggregate checks).

Everything here returns plain numbers and small histograms (JSON-able, kept as run history); row-level samples
are separate functions, called only when a check has failed.
"""

from __future__ import annotations

import math
from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from nightrec.features.events import ts_of
from nightrec.io.raw import FILE, LINE, REASON
from schemas.tables import RAW_TABLES

_DUP_KEYS = ["user_id", "item_id", "event_type", "ts"]


def _count(cond) -> F.Column:
    return F.sum(F.when(cond, 1).otherwise(0))


def nullable_columns(name: str) -> list[str]:
    return [c.name for c in RAW_TABLES[name].columns if c.nullable]


def table_counts(checked: DataFrame, name: str) -> dict:
    """Rows, malformed rows and null rates of the nullable columns of one raw table (one pass)."""
    good = F.col(REASON).isNull()
    cols = nullable_columns(name)
    aggs = [F.count(F.lit(1)).alias("rows"), _count(~good).alias("malformed")]
    aggs += [_count(good & F.col(c).isNull()).alias(f"null_{c}") for c in cols]
    if name == "items":
        aggs.append(_count(good & F.col("available")).alias("available"))
    row = checked.agg(*aggs).first().asDict()
    row = {k: int(v or 0) for k, v in row.items()}
    n_good = row["rows"] - row["malformed"]
    out = {
        "rows": n_good,
        "malformed": row["malformed"],
        "null_rate": {c: (row[f"null_{c}"] / n_good if n_good else 0.0) for c in cols},
    }
    if name == "items":
        out["available"] = row["available"]
    return out


def event_counts(
    events: DataFrame, items: DataFrame, ds: date, data_start: date, max_value, event_types: list[str]
) -> dict:
    """Events out of range, on the last day, with a bad value, duplicated, or of unknown items, and the mix of
    event types: one scan, one shuffle (duplicates) and one broadcast anti-join (unknown items)."""
    start, stop, last = ts_of(data_start), ts_of(ds), ts_of(ds - timedelta(days=1))
    ts, et = F.col("ts"), F.col("event_type")
    bad_value = F.col("value") < 0
    if max_value is not None:
        bad_value = bad_value | (F.col("value") > max_value)
    aggs = [
        _count((ts < F.lit(start)) | (ts >= F.lit(stop))).alias("out_of_range_ts"),
        _count(ts >= F.lit(stop)).alias("future_ts"),
        _count((ts >= F.lit(last)) & (ts < F.lit(stop))).alias("events_last_day"),
        _count(bad_value).alias("bad_value"),
        _count(~et.isin(event_types) | et.isNull()).alias("type:other"),
        *[_count(et == t).alias(f"type:{t}") for t in event_types],
    ]
    row = {k: int(v or 0) for k, v in events.agg(*aggs).first().asDict().items()}
    mix = {k[5:]: row.pop(k) for k in list(row) if k.startswith("type:")}
    copies = events.groupBy(*_DUP_KEYS).count()
    row["duplicates"] = int(copies.agg(F.sum(F.col("count") - 1)).first()[0] or 0)
    known = F.broadcast(items.select("item_id").distinct())
    row["unknown_items"] = events.join(known, "item_id", "left_anti").count()
    row["hist"] = {"event_type_mix": {k: v for k, v in mix.items() if v}}
    return row


def _rows(df: DataFrame, n: int) -> list[dict]:
    return [
        {k: (str(v) if v is not None else None) for k, v in r.asDict().items()} for r in df.limit(n).collect()
    ]


def sample_where(checked: DataFrame, cond, n: int, columns: list[str] | None = None) -> list[dict]:
    """Up to ``n`` rows matching ``cond``, with the file each came from."""
    cols = columns or [c for c in checked.columns if c not in (LINE, REASON)]
    return _rows(checked.where(cond).select(*cols, FILE if FILE not in cols else F.lit(None)), n)


def sample_duplicates(events: DataFrame, n: int) -> list[dict]:
    dup = events.groupBy(*_DUP_KEYS).agg(F.count(F.lit(1)).alias("copies"), F.first(FILE).alias(FILE))
    return _rows(dup.where(F.col("copies") > 1), n)


def sample_unknown_items(events: DataFrame, items: DataFrame, n: int) -> list[dict]:
    known = items.select("item_id").distinct()
    return _rows(events.join(known, "item_id", "left_anti").select(*_DUP_KEYS, FILE), n)


def sample_malformed(checked: DataFrame, n: int) -> list[dict]:
    return _rows(checked.where(F.col(REASON).isNotNull()).select(FILE, LINE, REASON), n)


def histogram(df: DataFrame, column) -> dict[str, int]:
    """Counts by value of ``column`` (a column name or expression), keys as strings."""
    rows = df.groupBy(column.alias("k") if not isinstance(column, str) else F.col(column).alias("k")).count()
    return {str(r["k"]): int(r["count"]) for r in rows.collect()}


def log2_bucket(col: str) -> F.Column:
    """0 for 0, else floor(log2(x)) + 1: activity-like counts in a dozen buckets."""
    return F.when(F.col(col) <= 0, 0).otherwise(F.floor(F.log2(F.col(col))) + 1).cast("int")


def safe_ratio(a: float, b: float) -> float:
    return a / b if b else (math.inf if a else 0.0)
