"""Per-user and per-item features as of a cutoff: only events strictly before the cutoff are used."""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from nightrec.features.events import ts_of


def _with_idx(df: DataFrame, mapping: DataFrame, idx: str) -> DataFrame:
    return df.join(F.broadcast(mapping), on=mapping.columns[0], how="left").fillna(0, subset=[idx])


def build_user_features(
    interactions: DataFrame,
    users: DataFrame,
    user_map: DataFrame,
    segment_map: DataFrame,
    item_categories: DataFrame,
    cutoff: date,
    history_len: int,
    role: str,
) -> DataFrame:
    """One row per known user (users table or any event before the cutoff).

    ``interactions`` carries user_id, item_idx, ts, weight; ``item_categories`` maps item_idx -> category_idx.
    """
    cut = F.lit(ts_of(cutoff))
    engaged = interactions.where((F.col("ts") < cut) & (F.col("weight") > 0))
    recent_first = Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col("item_idx").desc())
    history = (
        engaged.where(F.col("item_idx") > 0)
        .withColumn("rn", F.row_number().over(recent_first))
        .where(F.col("rn") <= history_len)
        .groupBy("user_id")
        .agg(F.sort_array(F.collect_list(F.struct("rn", "item_idx"))).alias("h"))
        .select("user_id", F.transform("h", lambda s: s["item_idx"]).alias("history"))
    )
    stats = engaged.groupBy("user_id").agg(
        F.count(F.lit(1)).alias("n_events"),
        ((F.unix_timestamp(cut) - F.unix_timestamp(F.max("ts"))) / 86400.0).alias("days_since_last"),
    )
    by_cat = Window.partitionBy("user_id").orderBy(F.col("w").desc(), F.col("category_idx"))
    top_cat = (
        engaged.join(F.broadcast(item_categories), on="item_idx", how="inner")
        .groupBy("user_id", "category_idx")
        .agg(F.sum("weight").alias("w"))
        .withColumn("rn", F.row_number().over(by_cat))
        .where(F.col("rn") == 1)
        .select("user_id", F.col("category_idx").alias("top_category_idx"))
    )
    segments = users.select("user_id", F.col("attributes")["segment"].alias("segment"))
    known = users.select("user_id").unionByName(engaged.select("user_id")).distinct()
    return (
        known.join(history, "user_id", "left")
        .join(stats, "user_id", "left")
        .join(top_cat, "user_id", "left")
        .join(segments, "user_id", "left")
        .join(F.broadcast(segment_map), "segment", "left")
        .join(user_map, "user_id", "left")
        .select(
            F.lit(role).alias("role"),
            "user_id",
            F.coalesce("user_idx", F.lit(0)).alias("user_idx"),
            F.coalesce("segment_idx", F.lit(0)).alias("segment_idx"),
            F.coalesce("history", F.array().cast("array<int>")).alias("history"),
            F.coalesce("n_events", F.lit(0)).alias("n_events"),
            "days_since_last",
            F.coalesce("top_category_idx", F.lit(0)).alias("top_category_idx"),
        )
    )


def build_item_features(
    interactions: DataFrame,
    items: DataFrame,
    item_map: DataFrame,
    category_map: DataFrame,
    cutoff: date,
    popularity_days: int,
    role: str,
) -> DataFrame:
    """One row per catalog item: category, price decile, popularity in the window before the cutoff."""
    cut, start = F.lit(ts_of(cutoff)), F.lit(ts_of(cutoff - timedelta(days=popularity_days)))
    pop = (
        interactions.where((F.col("ts") < cut) & (F.col("ts") >= start))
        .groupBy("item_id")
        .agg(F.sum("weight").alias("popularity"))
    )
    deciles = Window.orderBy("price")
    priced = items.where(F.col("price").isNotNull()).select(
        "item_id", (F.ntile(10).over(deciles)).alias("price_bucket")
    )
    return (
        items.select("item_id", "category", "available")
        .join(pop, "item_id", "left")
        .join(priced, "item_id", "left")
        .join(F.broadcast(category_map), "category", "left")
        .join(item_map, "item_id", "left")
        .withColumn("popularity", F.coalesce("popularity", F.lit(0.0)))
        .select(
            F.lit(role).alias("role"),
            "item_id",
            F.coalesce("item_idx", F.lit(0)).alias("item_idx"),
            F.coalesce("category_idx", F.lit(0)).alias("category_idx"),
            F.coalesce("price_bucket", F.lit(0)).alias("price_bucket"),
            "popularity",
            F.least(F.floor(F.log2(F.col("popularity") + 1.0)), F.lit(31)).cast("int").alias("pop_bucket"),
            "available",
        )
    )
