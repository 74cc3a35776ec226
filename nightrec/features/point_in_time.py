"""Per-user and per-item features as of a cutoff: only events strictly before the cutoff are used."""

from __future__ import annotations

from datetime import date, timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from nightrec.features.events import ts_of
from schemas.tables import COUNT_EVENT_TYPES, COUNT_WINDOWS, POPULARITY_WINDOWS, count_column

CTR_WINDOW_DAYS = 30
# Impressions' worth of the catalog-wide rate mixed into each item's CTR: an item shown 3 times and clicked
# once is not a 33% item.
CTR_PRIOR_IMPRESSIONS = 20.0
_DAY_US = 86_400_000_000.0  # microsecond arithmetic: unix_timestamp() would drop the fraction


def _since(cutoff: date, days: int) -> Column:
    return F.col("ts") >= F.lit(ts_of(cutoff - timedelta(days=days)))


def _by_user_and_category(before: DataFrame, cutoff: date) -> DataFrame:
    """First level of the user aggregate: one row per (user, category) with additive partial sums.

    ``category_idx`` is null for events whose item has no category; such rows still count, but carry no
    affinity weight.
    """
    engaged = F.col("weight") > 0
    return before.groupBy("user_id", "category_idx").agg(
        *[
            F.count(F.when((F.col("event_type") == t) & _since(cutoff, w), 1)).alias(count_column(t, w))
            for t in COUNT_EVENT_TYPES
            for w in COUNT_WINDOWS
        ],
        F.count(F.when(engaged, 1)).alias("n_events"),
        F.max(F.when(engaged, F.col("ts"))).alias("last_ts"),
        F.sum(F.when(engaged, F.col("price"))).alias("price_sum"),
        F.count(F.when(engaged, F.col("price"))).alias("price_n"),
        F.sum(F.when(engaged & F.col("category_idx").isNotNull(), F.col("weight"))).alias("w"),
    )


def _user_stats(before: DataFrame, cutoff: date) -> DataFrame:
    """Counts by type and window, engaged count, recency, mean price and category affinity: one pass.

    Two aggregation levels over rows that are already partitioned by user (see ``clean_events``), so neither
    level shuffles the events. Affinity: the top category by engaged weight (ties: the smaller index) and the
    weight share of the top 1 and top 3 categories.
    """
    cut = F.lit(ts_of(cutoff))
    counts = [count_column(t, w) for t in COUNT_EVENT_TYPES for w in COUNT_WINDOWS]
    # Categories by weight, heaviest first: sorting (-w, category_idx) ascending breaks ties by the index.
    cats = F.sort_array(
        F.collect_list(F.when(F.col("w").isNotNull(), F.struct((-F.col("w")).alias("nw"), "category_idx")))
    )

    def total(arr: Column) -> Column:  # summed heaviest first, as a running sum over the ranked rows would
        return -F.aggregate(arr, F.lit(0.0), lambda acc, x: acc + x["nw"])

    total_w = F.when(F.size("cats") > 0, total(F.col("cats")))  # no engaged weight: no affinity

    return (
        _by_user_and_category(before, cutoff)
        .groupBy("user_id")
        .agg(
            *[F.sum(c).alias(c) for c in counts],
            F.sum("n_events").alias("n_events"),
            F.max("last_ts").alias("last_ts"),
            (F.sum("price_sum") / F.nullif(F.sum("price_n"), F.lit(0))).alias("mean_price"),
            cats.alias("cats"),
        )
        .select(
            "user_id",
            *counts,
            "n_events",
            ((F.unix_micros(cut) - F.unix_micros("last_ts")) / _DAY_US).alias("days_since_last"),
            "mean_price",
            F.get("cats", 0)["category_idx"].alias("top_category_idx"),
            F.try_divide(total(F.slice("cats", 1, 1)), total_w).alias("top_category_share"),
            F.try_divide(total(F.slice("cats", 1, 3)), total_w).alias("top3_category_share"),
        )
    )


def _history(engaged: DataFrame, history_len: int) -> DataFrame:
    """(user_id, history): the last ``history_len`` engaged known items, newest first."""
    recent_first = Window.partitionBy("user_id").orderBy(F.col("ts").desc(), F.col("item_idx").desc())
    return (
        engaged.where(F.col("item_idx") > 0)
        .withColumn("rn", F.row_number().over(recent_first))
        .where(F.col("rn") <= history_len)
        .groupBy("user_id")
        .agg(F.sort_array(F.collect_list(F.struct("rn", "item_idx"))).alias("h"))
        .select("user_id", F.transform("h", lambda s: s["item_idx"]).alias("history"))
    )


def build_user_features(
    interactions: DataFrame,
    users: DataFrame,
    user_map: DataFrame,
    segment_map: DataFrame,
    item_categories: DataFrame,
    cutoff: date,
    history_len: int,
    role: str,
    item_prices: DataFrame | None = None,
) -> DataFrame:
    """One row per known user (users table or any event before the cutoff).

    Args:
        interactions: user_id, item_idx, event_type, ts, weight.
        users: user_id, attributes; one row per user.
        user_map: user_id -> user_idx.
        segment_map: segment -> segment_idx.
        item_categories: item_idx -> category_idx, one row per item.
        cutoff: Only events strictly before its midnight are used.
        history_len: Items kept in ``history``.
        role: Written as the ``role`` column.
        item_prices: item_idx -> price, one row per item; without it ``mean_price`` is null.

    Returns:
        The USER_FEATURES columns.
    """
    before = interactions.where(F.col("ts") < F.lit(ts_of(cutoff)))
    if "event_type" not in before.columns:  # hand-built frames of engaged events only
        before = before.withColumn("event_type", F.lit(None).cast("string"))
    # Category and price of each item in one small broadcast table: one join, no shuffle of the events.
    item_attrs = item_categories.select("item_idx", "category_idx")
    if item_prices is not None:
        item_attrs = item_attrs.join(item_prices.select("item_idx", "price"), "item_idx", "full")
    else:
        item_attrs = item_attrs.withColumn("price", F.lit(None).cast("double"))
    stats = _user_stats(before.join(F.broadcast(item_attrs), "item_idx", "left"), cutoff)
    history = _history(before.where(F.col("weight") > 0), history_len)
    segments = users.select("user_id", F.col("attributes")["segment"].alias("segment"))
    count_cols = [
        F.coalesce(count_column(t, w), F.lit(0)).alias(count_column(t, w))
        for t in COUNT_EVENT_TYPES
        for w in COUNT_WINDOWS
    ]
    # Known users: the users table plus anyone with an event before the cutoff (impressions alone count).
    return (
        segments.join(stats, "user_id", "full")
        .join(history, "user_id", "left")
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
            "top_category_share",
            "top3_category_share",
            "mean_price",
            *count_cols,
        )
    )


def _item_stats(interactions: DataFrame, cutoff: date, popularity_days: int) -> DataFrame:
    """One pass over the longest window: weighted popularity per window, impressions and clicks.

    Keyed by ``item_idx``: hashing an int per event instead of the id string is the cheaper aggregation, and
    every catalog item has an index (the vocabulary is extended with the catalog before the events are indexed).
    """
    longest = max(popularity_days, CTR_WINDOW_DAYS, *POPULARITY_WINDOWS)
    window = interactions.where(
        (F.col("ts") < F.lit(ts_of(cutoff))) & _since(cutoff, longest) & (F.col("item_idx") > 0)
    )
    ctr_window = _since(cutoff, CTR_WINDOW_DAYS)
    return window.groupBy("item_idx").agg(
        F.sum(F.when(_since(cutoff, popularity_days), F.col("weight"))).alias("popularity"),
        *[
            F.sum(F.when(_since(cutoff, w), F.col("weight"))).alias(f"popularity_{w}d")
            for w in POPULARITY_WINDOWS
        ],
        F.count(F.when(ctr_window & (F.col("event_type") == "impression"), 1)).alias("impressions_30d"),
        F.count(F.when(ctr_window & (F.col("event_type") == "click"), 1)).alias("clicks_30d"),
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
    """One row per catalog item: category, tags, price decile, age, popularity, trend and CTR before the cutoff.

    CTR is clicks over impressions in the last 30 days, shrunk toward the catalog-wide rate by
    ``CTR_PRIOR_IMPRESSIONS`` impressions; it is null where the window has no impressions at all.
    """
    stats = _item_stats(interactions, cutoff, popularity_days)
    # try_divide: a log without impressions (ratings, purchases) has no catalog-wide rate, so the prior and
    # every item's smoothed CTR are null; under ANSI mode a plain division would fail the whole build.
    prior = stats.agg(F.try_divide(F.sum("clicks_30d"), F.sum("impressions_30d")).alias("prior_ctr"))
    # Ties in price are broken by id: otherwise equal prices could land in different deciles run to run.
    deciles = Window.orderBy("price", "item_id")
    priced = items.where(F.col("price").isNotNull()).select(
        "item_id", (F.ntile(10).over(deciles)).alias("price_bucket")
    )
    age = (F.unix_micros(F.lit(ts_of(cutoff))) - F.unix_micros("created_at")) / _DAY_US
    pops = [f"popularity_{w}d" for w in POPULARITY_WINDOWS]
    zero_if_absent = {c: 0.0 for c in ["popularity", *pops]} | {"impressions_30d": 0, "clicks_30d": 0}
    return (
        items.select("item_id", "category", "tags", "available", "created_at")
        .join(item_map, "item_id", "left")
        .join(stats, "item_idx", "left")
        .join(priced, "item_id", "left")
        .join(F.broadcast(category_map), "category", "left")
        .crossJoin(F.broadcast(prior))
        .fillna(zero_if_absent)
        .select(
            F.lit(role).alias("role"),
            "item_id",
            F.coalesce("item_idx", F.lit(0)).alias("item_idx"),
            F.coalesce("category_idx", F.lit(0)).alias("category_idx"),
            F.coalesce("price_bucket", F.lit(0)).alias("price_bucket"),
            "popularity",
            F.least(F.floor(F.log2(F.col("popularity") + 1.0)), F.lit(31)).cast("int").alias("pop_bucket"),
            "available",
            "tags",
            # Not yet in the catalog at the cutoff (or unknown): no age rather than a negative one.
            F.when(age >= 0, age).alias("age_days"),
            *pops,
            F.when(
                F.col("popularity_30d") > 0, (F.col("popularity_7d") / 7.0) / (F.col("popularity_30d") / 30.0)
            ).alias("trend_7d_30d"),
            "impressions_30d",
            "clicks_30d",
            F.least(
                (F.col("clicks_30d") + CTR_PRIOR_IMPRESSIONS * F.col("prior_ctr"))
                / (F.col("impressions_30d") + CTR_PRIOR_IMPRESSIONS),
                F.lit(1.0),
            ).alias("ctr_smoothed"),
        )
    )
