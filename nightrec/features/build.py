"""build_features: raw tables in, every feature table of one run date out (each behind a completion marker)."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from nightrec.features import events as ev
from nightrec.features import examples, point_in_time, vocab
from nightrec.io import lake, raw
from nightrec.settings import FeatureSettings
from schemas.spark import conform, to_struct_type
from schemas.tables import (
    INTERACTIONS,
    ITEM_FEATURES,
    RANKING_EXAMPLES,
    RETRIEVAL_EXAMPLES,
    USER_FEATURES,
    VOCAB,
    Table,
)

OUTPUTS = (VOCAB, INTERACTIONS, USER_FEATURES, ITEM_FEATURES, RETRIEVAL_EXAMPLES, RANKING_EXAMPLES)


@dataclass(frozen=True)
class FeatureSummary:
    ds: str
    fingerprint: str
    skipped: bool
    rows: dict[str, int]
    cutoffs: dict[str, str]


def code_fingerprint() -> str:
    """Hash of the feature code, so a code change invalidates yesterday's markers."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[2]
    for p in sorted([*Path(__file__).parent.glob("*.py"), root / "schemas" / "tables.py"]):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def fingerprint(raw_root: str | Path, run_date: date, cfg: FeatureSettings) -> str:
    return lake.fingerprint_files(
        raw.raw_files(raw_root),
        {"ds": run_date.isoformat(), "cfg": cfg.model_dump(), "code": code_fingerprint()},
    )


def parquet_rows(path: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in path.rglob("*.parquet"))


def write_table(df: DataFrame, table: Table, lake_root: str, ds: date, fp: str) -> int:
    """Conform, write to staging, swap into place, then the marker. Returns the row count."""
    staging = lake.staging_path(lake_root, table.name, ds)
    writer = conform(df, table).write.mode("overwrite")
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    writer.parquet(str(staging))
    final = lake.partition_path(lake_root, table.name, ds)
    lake.commit_staging(staging, final)
    rows = parquet_rows(final)
    lake.write_marker(final, fp, table=table.name, rows=rows)
    return rows


def read_table(spark: SparkSession, lake_root: str, table: Table, ds: date) -> DataFrame:
    path = lake.require_partition(lake_root, table.name, ds)
    return spark.read.schema(to_struct_type(table)).parquet(str(path)).select(*table.names)


def build_features(
    spark: SparkSession,
    raw_root: str | Path,
    lake_root: str,
    run_date: date,
    cfg: FeatureSettings,
    force: bool = False,
) -> FeatureSummary:
    """Build every feature table for ``run_date``; skip when all markers match the input fingerprint."""
    cut = ev.Cutoffs.for_run(run_date, cfg)
    cut_info = {k: str(v) for k, v in asdict(cut).items()}
    fp = fingerprint(raw_root, run_date, cfg)
    if not force and all(lake.is_complete(lake_root, t.name, run_date, fp) for t in OUTPUTS):
        rows = {
            t.name: lake.read_marker(lake.partition_path(lake_root, t.name, run_date))["rows"]
            for t in OUTPUTS
        }
        return FeatureSummary(run_date.isoformat(), fp, True, rows, cut_info)

    events = raw.read_raw_table(spark, raw_root, "events")
    items = raw.read_raw_table(spark, raw_root, "items").dropDuplicates(["item_id"])
    users = raw.read_raw_table(spark, raw_root, "users").dropDuplicates(["user_id"])
    clean = ev.clean_events(events, items, run_date, cfg).persist()
    rows: dict[str, int] = {}

    prev_ds = lake.latest_complete(lake_root, VOCAB.name, before=run_date)
    prev = read_table(spark, lake_root, VOCAB, prev_ds) if prev_ds else None
    train_engaged = clean.where((F.col("ts") < F.lit(ev.ts_of(cut.eval_start))) & (F.col("weight") > 0))
    new_vocab = (
        vocab.extend_vocab(prev, train_engaged.select(F.col("user_id").alias("value")), "user_id")
        .unionByName(vocab.extend_vocab(prev, items.select(F.col("item_id").alias("value")), "item_id"))
        .unionByName(vocab.extend_vocab(prev, items.select(F.col("category").alias("value")), "category"))
        .unionByName(
            vocab.extend_vocab(prev, users.select(F.col("attributes")["segment"].alias("value")), "segment")
        )
    )
    rows[VOCAB.name] = write_table(new_vocab, VOCAB, lake_root, run_date, fp)
    voc = read_table(spark, lake_root, VOCAB, run_date)
    user_map = vocab.lookup(voc, "user_id", "user_id", "user_idx")
    item_map = vocab.lookup(voc, "item_id", "item_id", "item_idx")
    category_map = vocab.lookup(voc, "category", "category", "category_idx")
    segment_map = vocab.lookup(voc, "segment", "segment", "segment_idx")

    inter = (
        clean.join(user_map, "user_id", "left")
        .join(item_map, "item_id", "left")
        .fillna(0, ["user_idx", "item_idx"])
    )
    rows[INTERACTIONS.name] = write_table(inter, INTERACTIONS, lake_root, run_date, fp)
    clean.unpersist()
    inter = read_table(spark, lake_root, INTERACTIONS, run_date).persist()

    item_feats = {
        role: point_in_time.build_item_features(
            inter, items, item_map, category_map, cutoff, cfg.popularity_days, role
        )
        for role, cutoff in (("eval", cut.eval_start), ("serve", run_date))
    }
    rows[ITEM_FEATURES.name] = write_table(
        item_feats["eval"].unionByName(item_feats["serve"]), ITEM_FEATURES, lake_root, run_date, fp
    )
    item_all = read_table(spark, lake_root, ITEM_FEATURES, run_date)
    item_static = (
        item_all.where(F.col("role") == "eval")
        .select("item_idx", "category_idx", "price_bucket", "pop_bucket")
        .where(F.col("item_idx") > 0)
    )
    item_categories = item_static.select("item_idx", "category_idx")

    user_feats = [
        point_in_time.build_user_features(
            inter, users, user_map, segment_map, item_categories, cutoff, cfg.history_len, role
        )
        for role, cutoff in (("eval", cut.eval_start), ("serve", run_date))
    ]
    rows[USER_FEATURES.name] = write_table(
        user_feats[0].unionByName(user_feats[1]), USER_FEATURES, lake_root, run_date, fp
    )
    user_static = (
        read_table(spark, lake_root, USER_FEATURES, run_date)
        .where(F.col("role") == "serve")
        .select("user_id", "segment_idx")
        .join(user_map, "user_id", "left")
        .fillna(0, ["user_idx"])
    )
    rows[RETRIEVAL_EXAMPLES.name] = write_table(
        examples.build_retrieval_examples(inter, user_static, item_static, cut, cfg.history_len),
        RETRIEVAL_EXAMPLES,
        lake_root,
        run_date,
        fp,
    )
    rows[RANKING_EXAMPLES.name] = write_table(
        examples.build_ranking_examples(
            inter, user_static, item_static, cut, cfg.negatives_per_positive, cfg.seed, cfg.history_len
        ),
        RANKING_EXAMPLES,
        lake_root,
        run_date,
        fp,
    )
    inter.unpersist()
    return FeatureSummary(run_date.isoformat(), fp, False, rows, cut_info)
