"""The ranking examples' base rows, kept by day across nights, so a night builds only the days it has not seen.

A night's ranking examples cover every day before its evaluation window: about 90 days of which the night
before had built all but one. A day's base rows (``examples.ranking_base``) depend only on the events up to the
end of that day and on a few settings, so each day is stored once under a key of exactly those inputs:

    <lake>/_ranking_days/<day>-<key>/part-*.parquet  (+ _MARKER.json, written last)

The key chains the per-day digests of the interactions (count and hash sum of every row) from the first day
to this one, with the settings and the feature code: an event changed, added or removed on any day changes
the key of that day and of every day after it, and only those are rebuilt. A folder is written once and never
replaced (another night may be reading it); a killed write leaves no marker, and the folder is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from nightrec.features import examples
from nightrec.features.events import Cutoffs, ts_of
from nightrec.io import lake
from nightrec.settings import FeatureSettings

ROOT = "_ranking_days"
# Folders of a day under another key (older data) are removed once this old: a backfill running beside
# tonight's night may still read its own.
STALE_AFTER = timedelta(days=1)

SCHEMA = T.StructType(
    [
        T.StructField("user_id", T.StringType()),
        T.StructField("item_idx", T.IntegerType()),
        T.StructField("day", T.DateType()),
        T.StructField("label", T.FloatType()),
        T.StructField("ts", T.TimestampType()),
        T.StructField("history", T.ArrayType(T.IntegerType())),
    ]
)


@dataclass(frozen=True)
class DayRows:
    """The base rows of a night's ranking examples and how many of their days this night built."""

    rows: DataFrame
    days: int
    built: int


def day_keys(interactions: DataFrame, end: date, cfg: FeatureSettings, code: str) -> dict[date, str]:
    """The key of each day before ``end`` that has events: its own and every earlier day's digest, chained."""
    digests = (
        interactions.where(F.col("ts") < F.lit(ts_of(end)))
        .groupBy(F.to_date("ts").alias("day"))
        .agg(
            F.count(F.lit(1)).alias("n"),
            # A decimal sum: a sum of 64-bit hashes overflows a long, which ANSI mode turns into an error.
            F.sum(
                F.xxhash64("user_id", "item_idx", "event_type", "ts", "weight").cast("decimal(38,0)")
            ).alias("h"),
        )
        .collect()
    )
    params = {
        "code": code,
        "history_len": cfg.history_len,
        "negatives_per_positive": cfg.negatives_per_positive,
        "seed": cfg.seed,
    }
    h = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
    keys = {}
    for r in sorted(digests, key=lambda r: r["day"]):
        h.update(f"{r['day']}:{r['n']}:{r['h']};".encode())
        keys[r["day"]] = h.hexdigest()[:16]
    return keys


def day_path(lake_root: str | Path, day: date, key: str) -> Path:
    return Path(lake_root) / ROOT / f"{day.isoformat()}-{key}"


def load(
    spark: SparkSession,
    lake_root: str,
    interactions: DataFrame,
    cut: Cutoffs,
    cfg: FeatureSettings,
    code: str,
    force: bool = False,
) -> DayRows:
    """The base rows of every day before ``cut.eval_start``: kept days read back, the others built and kept.

    ``force`` rebuilds every day (a forced feature build rebuilds from the raw events alone).
    """
    keys = day_keys(interactions, cut.eval_start, cfg, code)
    missing = [d for d, k in keys.items() if force or lake.read_marker(day_path(lake_root, d, k)) is None]
    if missing:
        _build(lake_root, interactions, cut, cfg, {d: keys[d] for d in missing})
    _prune(lake_root, keys)
    paths = [str(day_path(lake_root, d, k)) for d, k in sorted(keys.items())]
    rows = spark.read.schema(SCHEMA).parquet(*paths) if paths else spark.createDataFrame([], SCHEMA)
    return DayRows(rows, len(keys), len(missing))


def _build(
    lake_root: str, interactions: DataFrame, cut: Cutoffs, cfg: FeatureSettings, keys: dict[date, str]
):
    """Build the days of ``keys`` in one job, then move each day's folder into place and mark it."""
    lake.clear_staging(lake_root, ROOT, cut.run_date)
    staging = lake.staging_path(lake_root, ROOT, cut.run_date)
    rows = examples.ranking_base(
        interactions, cut, cfg.negatives_per_positive, cfg.seed, cfg.history_len, days=sorted(keys)
    )
    # Partitioned by a copy of the day: the files keep the day column, so a folder reads back on its own.
    rows = rows.select(*[F.col(f.name).cast(f.dataType) for f in SCHEMA.fields])
    rows.withColumn("_day", F.col("day")).write.mode("overwrite").partitionBy("_day").parquet(str(staging))
    for d, key in keys.items():
        # Every day of ``keys`` has events, and every event makes a pair: no day's folder is missing.
        part, final = staging / f"_day={d.isoformat()}", day_path(lake_root, d, key)
        lake.commit_staging(part, final)
        lake.write_marker(final, key, day=d.isoformat(), built_by=cut.run_date.isoformat())
    shutil.rmtree(staging, ignore_errors=True)


def _prune(lake_root: str, keys: dict[date, str]) -> None:
    """Remove the folders of tonight's days kept under other keys (the data changed), once they are stale."""
    root = Path(lake_root) / ROOT
    stale = datetime.now(UTC).timestamp() - STALE_AFTER.total_seconds()
    for d, key in keys.items():
        for p in root.glob(f"{d.isoformat()}-*"):
            # A folder written recently may belong to a night running beside this one (a backfill).
            if p.name != f"{d.isoformat()}-{key}" and p.is_dir() and p.stat().st_mtime < stale:
                shutil.rmtree(p, ignore_errors=True)
