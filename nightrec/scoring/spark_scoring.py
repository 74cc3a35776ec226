"""Precompute on Spark executors: the same Scorer, run per Arrow batch of users by ``mapInArrow``.

The driver loads only the catalog side (items, rules) and broadcasts it with the two models; users and their
seen items stay in Spark, are grouped per user there, and reach the executors as Arrow batches. Each executor's
Python worker builds its Scorer once per broadcast (item vectors, index) and reuses it for every batch, so the
work per user is exactly the local path's. Chosen with ``scoring.engine = "spark"``.
"""

from __future__ import annotations

import pickle
import uuid
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pyarrow as pa
import torch
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from nightrec.io import lake
from nightrec.scoring import inputs, rules
from nightrec.scoring.precompute import chunk_table, write_coldstart
from nightrec.scoring.score import Scorer, ScoringConfig
from nightrec.settings import Settings
from schemas.results import ListsWritten
from schemas.spark import to_struct_type
from schemas.tables import INTERACTIONS, RECS, USER_FEATURES

_SCORERS: dict[str, tuple[Scorer, inputs.ItemTable, int]] = {}  # per Python worker: run token -> scorer


def precompute_spark(
    spark: SparkSession, settings: Settings, ds: date, retrieval, ranking, fingerprint: str
) -> ListsWritten:
    """Score every user as of ``ds`` on the executors and write the RECS partition as the local path does."""
    sc, cfg = settings.scoring, settings.features
    items = inputs.load_items(settings.lake, ds, "serve")
    users = _users_with_seen(spark, settings, ds)
    blocked = np.isin(items.item_id, np.asarray(sc.blocklist, dtype=object))
    allowed = items.available & ~blocked
    categories = rules.category_indices(settings.lake, ds) if sc.category_boosts else {}
    night = rules.Rules(
        blocked,
        rules.item_boosts(items, sc, categories),
        _segment_popular(spark, settings, ds, items, allowed),
    )
    payload = pickle.dumps(
        (retrieval, ranking, items, ScoringConfig.from_settings(sc), night, cfg.history_len)
    )
    bc = spark.sparkContext.broadcast(payload)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(sc.user_chunk_size))
    recs = users.mapInArrow(_score_batches(bc, uuid.uuid4().hex), to_struct_type(RECS))
    staging = lake.staging_path(settings.lake, settings.recs_table, ds)
    staging.parent.mkdir(parents=True, exist_ok=True)
    recs.write.mode("overwrite").parquet(str(staging))
    bc.unpersist()
    written = spark.read.parquet(str(staging))
    per_user = written.groupBy("user_id").agg(
        F.count("*").alias("n"), F.max(F.col("source") == "fallback").alias("fb")
    )
    counts = per_user.agg(
        F.count("*").alias("users"),
        F.sum("n").alias("rows"),
        F.sum(F.col("fb").cast("int")).alias("fallback"),
        F.sum((F.col("n") < sc.top_k).cast("int")).alias("short"),
    ).first()
    n_users = users.count()
    rows, fallback = int(counts["rows"] or 0), int(counts["fallback"] or 0)
    short = int(counts["short"] or 0) + (n_users - int(counts["users"]))  # users with no item at all
    (staging / "_SUCCESS").unlink(missing_ok=True)  # the lake's completion marker is _MARKER.json
    write_coldstart(settings, ds, items, allowed, night, staging)
    final = lake.partition_path(settings.lake, settings.recs_table, ds)
    lake.commit_staging(staging, final)
    lake.write_marker(final, fingerprint, table=RECS.name, rows=rows, engine="spark")
    return ListsWritten(
        path=str(final),
        users=n_users,
        rows=rows,
        model_users=n_users - fallback,
        fallback_users=fallback,
        short_lists=short,
    )


def _users_with_seen(spark: SparkSession, settings: Settings, ds: date) -> DataFrame:
    users = spark.read.schema(_struct(USER_FEATURES, drop=("role",))).parquet(
        str(lake.require_partition(settings.lake, USER_FEATURES.name, ds) / "role=serve")
    )
    seen = (
        _seen_events(spark, settings, ds)
        .groupBy("user_id")
        .agg(F.collect_list("item_id").alias("seen_items"))
    )
    return users.select("user_id", "user_idx", "segment_idx", "history", "n_events").join(
        seen, "user_id", "left"
    )


def _seen_events(spark: SparkSession, settings: Settings, ds: date) -> DataFrame:
    """Interactions before ``ds`` that mark an item as seen (as inputs.load_interactions filters them)."""
    path = lake.require_partition(settings.lake, INTERACTIONS.name, ds)
    cutoff = datetime.combine(ds, time(0), tzinfo=UTC)
    return (
        spark.read.schema(_struct(INTERACTIONS))
        .parquet(str(path))
        .where(F.col("ts") < F.lit(cutoff))
        .where(~F.col("event_type").isin(list(settings.features.unseen_event_types)))
    )


def _segment_popular(
    spark: SparkSession, settings: Settings, ds: date, items: inputs.ItemTable, allowed: np.ndarray
) -> dict[int, np.ndarray]:
    """rules.segment_popular computed by Spark: only each segment's top items reach the driver."""
    sc = settings.scoring
    users = spark.read.parquet(
        str(lake.require_partition(settings.lake, USER_FEATURES.name, ds) / "role=serve")
    ).select("user_id", "segment_idx")
    since = datetime.combine(ds - timedelta(days=settings.features.popularity_days), time(0), tzinfo=UTC)
    events = (
        _seen_events(spark, settings, ds)
        .where((F.col("weight") > 0) & (F.col("ts") >= F.lit(since)))
        .join(users, "user_id")
    )
    events = events.where(F.col("segment_idx") > 0)
    catalog = spark.createDataFrame(
        pa.table(
            {
                "item_id": pa.array(items.item_id[allowed], pa.string()),
                "popularity": pa.array(items.popularity[allowed]),
            }
        ).to_pandas()
    )
    n_users = events.groupBy("segment_idx").agg(F.countDistinct("user_id").alias("n_users"))
    weights = (
        events.join(F.broadcast(catalog), "item_id")
        .groupBy("segment_idx", "item_id")
        .agg(F.sum("weight").alias("weight"), F.first("popularity").alias("popularity"))
        .join(n_users.where(F.col("n_users") >= sc.segment_fallback_min_users), "segment_idx")
    )
    order = Window.partitionBy("segment_idx").orderBy(
        F.desc("weight"), F.desc("popularity"), F.asc("item_id")
    )
    top = weights.withColumn("r", F.row_number().over(order)).where(F.col("r") <= sc.top_k)
    rows = top.select("segment_idx", "item_id", "weight").toArrow()
    pos = inputs.positions(rows["item_id"], items.item_id)
    return rules.rank_segment_lists(
        rows["segment_idx"].to_numpy(), pos, rows["weight"].to_numpy(), items, allowed, sc.top_k
    )


def _score_batches(bc, token: str):
    def run(batches):
        ctx = TaskContext.get()
        if ctx is not None:
            torch.set_num_threads(max(1, ctx.cpus()))
        if token not in _SCORERS:
            retrieval, ranking, items, cfg, night, history_len = pickle.loads(bc.value)
            _SCORERS.clear()
            _SCORERS[token] = (Scorer(retrieval, ranking, items, cfg, night), items, history_len)
        scorer, items, history_len = _SCORERS[token]
        for batch in batches:
            users, seen = _batch_inputs(batch, items, history_len)
            res = scorer.score(users, seen, 0)
            tbl, _ = chunk_table(users, items, res)
            yield from tbl.to_batches()

    return run


def _batch_inputs(batch: pa.RecordBatch, items: inputs.ItemTable, history_len: int):
    users = inputs.UserTable(
        user_id=np.asarray(batch.column("user_id").to_pylist(), dtype=object),
        user_idx=batch.column("user_idx").to_numpy(zero_copy_only=False).astype(np.int64),
        segment_idx=batch.column("segment_idx").to_numpy(zero_copy_only=False).astype(np.int64),
        history=inputs.pad_lists(batch.column("history"), history_len),
        n_events=batch.column("n_events").to_numpy(zero_copy_only=False).astype(np.int64),
    )
    seen_col = batch.column("seen_items")
    lengths = np.asarray(seen_col.value_lengths().fill_null(0), dtype=np.int64)
    flat = seen_col.flatten()
    rows = np.repeat(np.arange(len(users)), lengths)
    cols = inputs.positions(flat, items.item_id)
    keep = cols >= 0
    # Unique (row, item) pairs in row order: the CSR the local path builds from the same pairs.
    codes = np.unique(rows[keep] * max(len(items), 1) + cols[keep])
    r, c = codes // max(len(items), 1), codes % max(len(items), 1)
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.add.at(indptr, r + 1, 1)
    return users, inputs.SeenIndex(np.cumsum(indptr), c.astype(np.int64))


def _struct(table, drop: tuple[str, ...] = ()) -> T.StructType:
    return T.StructType([f for f in to_struct_type(table).fields if f.name not in drop])
