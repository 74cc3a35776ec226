"""Statistics of raw and feature tables in as few Spark passes as possible (the inputs of the aggregate checks).

Everything here returns plain numbers and small histograms (JSON-able, kept as run history); row-level samples
are separate functions, called only when a check has failed.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from functools import reduce
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from nightrec.features.events import ts_of
from nightrec.io.raw import FILE, LINE, REASON
from schemas.tables import RAW_TABLES

_DUP_KEYS = ["user_id", "item_id", "event_type", "ts"]
_EVENT_STATS = ("out_of_range_ts", "future_ts", "events_last_day", "bad_value", "duplicates", "unknown_items")


T = TypeVar("T")
JOB_THREADS = 4


def concurrently(jobs: dict[str, Callable[[], T]], threads: int = JOB_THREADS) -> dict[str, T]:
    """Run independent Spark actions from a few driver threads; results by name, the first error raised.

    A gate's jobs are many and mostly small (one aggregate per table, a few histograms): run one after the
    other, each spends a good part of its time in planning, scheduling and stage start-up while the cores
    wait. Submitted together they overlap (10M-event feature gate, warm: 8.4 s serial, 6.1 s from 4 threads).
    """
    with ThreadPoolExecutor(max(1, min(threads, len(jobs)))) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def count_where(cond) -> F.Column:
    return F.sum(F.when(cond, 1).otherwise(0))


def nullable_columns(name: str) -> list[str]:
    return [c.name for c in RAW_TABLES[name].columns if c.nullable]


def _table_aggs(name: str) -> list[F.Column]:
    good = F.col(REASON).isNull()
    aggs = [F.count(F.lit(1)).alias("rows"), count_where(~good).alias("malformed")]
    aggs += [count_where(good & F.col(c).isNull()).alias(f"null_{c}") for c in nullable_columns(name)]
    if name == "items":
        aggs.append(count_where(good & F.col("available")).alias("available"))
    return aggs


def _table_result(row: dict, name: str) -> dict:
    cols = nullable_columns(name)
    n_good = row["rows"] - row["malformed"]
    out = {
        "rows": n_good,
        "malformed": row["malformed"],
        "null_rate": {c: (row[f"null_{c}"] / n_good if n_good else 0.0) for c in cols},
    }
    if name == "items":
        out["available"] = row["available"]
    return out


def table_counts(
    checked: DataFrame, name: str, rules: dict[str, F.Column] | None = None
) -> tuple[dict, dict]:
    """Rows, malformed rows and null rates of the nullable columns of one raw table, plus how many well-formed
    rows match each of ``rules`` (offending-row conditions of the contract): one pass.

    Returns:
        (table counts, offending rows by rule name).
    """
    rules = rules or {}
    good = F.col(REASON).isNull()
    aggs = _table_aggs(name) + [count_where(good & cond).alias(k) for k, cond in rules.items()]
    row = {k: int(v or 0) for k, v in checked.agg(*aggs).first().asDict().items()}
    return _table_result(row, name), {k: row[k] for k in rules}


def duplicate_key_rows(df: DataFrame, key: list[str] | tuple[str, ...]) -> int:
    """Rows whose key occurs more than once (rows with an all-null key are left out, as GX does)."""
    present = reduce(operator.or_, [F.col(c).isNotNull() for c in key])
    dup = df.where(present).groupBy(*key).count().where(F.col("count") > 1)
    return int(dup.agg(F.sum("count")).first()[0] or 0)


def event_counts(
    checked: DataFrame,
    items: DataFrame,
    ds: date,
    data_start: date,
    max_value,
    event_types: list[str],
    rules: dict[str, F.Column] | None = None,
) -> tuple[dict, dict, dict]:
    """Everything the raw gate counts on the events: their ``table_counts``, the statistics (out of range, on
    the last day, bad value, duplicated, unknown item, mix of types) and the contract's offending rows.

    Two Spark jobs. One scan aggregates every count but the replays, the catalog broadcast and joined (not
    anti-joined in a scan of its own). One shuffle, by user, counts the replays: the replay key (user, item,
    type, ts) contains the user, so its grouping needs no second shuffle; only the key travels. (Counting the
    rest over the replay groups in the same job measured slower: the flags widen the shuffle and the final
    aggregation runs over all the groups.)

    Args:
        checked: The events as read, malformed rows included (``_reason`` set); statistics count the others.
        rules: Contract rule name -> the condition selecting the rows that break it.

    Returns:
        (table counts, event statistics, offending rows by contract rule).
    """
    rules = rules or {}
    start, stop, last = ts_of(data_start), ts_of(ds), ts_of(ds - timedelta(days=1))
    good, ts, et = F.col(REASON).isNull(), F.col("ts"), F.col("event_type")
    bad_value = F.col("value") < 0
    if max_value is not None:
        bad_value = bad_value | (F.col("value") > max_value)
    known = F.broadcast(items.select("item_id").distinct().select("item_id", F.lit(True).alias("_known")))
    conds = {
        "out_of_range_ts": (ts < F.lit(start)) | (ts >= F.lit(stop)),
        "future_ts": ts >= F.lit(stop),
        "events_last_day": (ts >= F.lit(last)) & (ts < F.lit(stop)),
        "bad_value": bad_value,
        "unknown_items": F.col("_known").isNull(),  # a null item_id is unknown too, as in an anti-join
        "type:other": ~et.isin(event_types) | et.isNull(),
        **{f"type:{t}": et == t for t in event_types},
        **rules,
    }
    aggs = _table_aggs("events") + [count_where(good & cond).alias(k) for k, cond in conds.items()]
    row = {
        k: int(v or 0) for k, v in checked.join(known, "item_id", "left").agg(*aggs).first().asDict().items()
    }
    copies = checked.where(good).select(*_DUP_KEYS).repartition("user_id").groupBy(*_DUP_KEYS).count()
    row["duplicates"] = int(copies.agg(F.sum(F.col("count") - 1)).first()[0] or 0)
    ev = {k: row[k] for k in _EVENT_STATS}
    mix = {k[5:]: row[k] for k in conds if k.startswith("type:")}
    ev["hist"] = {"event_type_mix": {k: v for k, v in mix.items() if v}}
    return _table_result(row, "events"), ev, {k: row[k] for k in rules}


def _rows(df: DataFrame, n: int) -> list[dict]:
    return [
        {k: (str(v) if v is not None else None) for k, v in r.asDict().items()} for r in df.limit(n).collect()
    ]


def sample_where(checked: DataFrame, cond, n: int, columns: list[str] | None = None) -> list[dict]:
    """Up to ``n`` rows matching ``cond``, with the file each came from (where the frame knows it)."""
    cols = columns or [c for c in checked.columns if c not in (LINE, REASON)]
    file = [FILE] if FILE in checked.columns and FILE not in cols else []
    return _rows(checked.where(cond).select(*cols, *file), n)


def sample_duplicates(events: DataFrame, n: int) -> list[dict]:
    dup = events.groupBy(*_DUP_KEYS).agg(F.count(F.lit(1)).alias("copies"), F.first(FILE).alias(FILE))
    return _rows(dup.where(F.col("copies") > 1), n)


def sample_unknown_items(events: DataFrame, items: DataFrame, n: int) -> list[dict]:
    known = items.select("item_id").distinct()
    return _rows(events.join(known, "item_id", "left_anti").select(*_DUP_KEYS, FILE), n)


def sample_malformed(checked: DataFrame, n: int) -> list[dict]:
    """Up to ``n`` malformed rows: file, line number (1-based, counting the header), the line's text, reason."""
    rows = _rows(checked.where(F.col(REASON).isNotNull()).select(FILE, LINE, REASON), n)
    for row in rows:
        row["line_number"] = line_number(row.get(FILE), row.get(LINE))
    return rows


def line_number(file: str | None, text: str | None) -> int | None:
    """The first line of ``file`` whose text is ``text``; None where either is unknown or it is not found.

    Spark's CSV and JSON readers do not report line numbers; a message names only a few rows, so the file is
    scanned for each of them here (a sample of five in a 200k-line file: well under a second).
    """
    if not file or text is None:
        return None
    path = Path(unquote(urlparse(file).path)) if file.startswith("file:") else Path(file)
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for i, line in enumerate(fh, start=1):
                if line.rstrip("\r\n") == text:
                    return i
    except OSError:
        return None
    return None


def histogram(df: DataFrame, column) -> dict[str, int]:
    """Counts by value of ``column`` (a column name or expression), keys as strings."""
    rows = df.groupBy(column.alias("k") if not isinstance(column, str) else F.col(column).alias("k")).count()
    return {str(r["k"]): int(r["count"]) for r in rows.collect()}


def log2_bucket(col: str) -> F.Column:
    """0 for 0, else floor(log2(x)) + 1: activity-like counts in a dozen buckets."""
    return F.when(F.col(col) <= 0, 0).otherwise(F.floor(F.log2(F.col(col))) + 1).cast("int")


def safe_ratio(a: float, b: float) -> float:
    return a / b if b else (math.inf if a else 0.0)
