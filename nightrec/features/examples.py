"""Training examples, all from events before the holdout window, split by time (never at random)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from nightrec.features.events import Cutoffs, ts_of

_SAMPLING_TABLE = 100_000


def _split(cut: Cutoffs) -> F.Column:
    return F.when(F.col("ts") < F.lit(ts_of(cut.valid_start)), "train").otherwise("valid")


def _split_with_holdout(cut: Cutoffs) -> F.Column:
    return F.when(F.col("ts") >= F.lit(ts_of(cut.eval_start)), "holdout").otherwise(_split(cut))


def build_retrieval_examples(
    interactions: DataFrame, user_static: DataFrame, item_static: DataFrame, cut: Cutoffs, history_len: int
) -> DataFrame:
    """Engaged events with the user's history as it was just before each event (point in time).

    The holdout window's events are written too, as split ``holdout``: training and evaluation never read
    them; the serving refit does, once the evaluated model is trained, so that the model that serves has
    seen the latest days.
    ``user_static``: user_id, user_idx, segment_idx; ``item_static``: item_idx, category_idx.
    """
    engaged = interactions.where((F.col("ts") < F.lit(ts_of(cut.run_date))) & (F.col("weight") > 0))
    # event_type breaks ties (a click and a cart at the same instant), so each row's history is reproducible.
    order = ("ts", "item_idx", "event_type")
    before = Window.partitionBy("user_id").orderBy(*order).rowsBetween(-history_len, -1)
    return (
        engaged.withColumn("history", F.reverse(F.collect_list("item_idx").over(before)))
        .drop("user_idx")
        .join(user_static, "user_id", "left")
        .join(F.broadcast(item_static), "item_idx", "left")
        .select(
            _split_with_holdout(cut).alias("split"),
            F.coalesce("user_idx", F.lit(0)).alias("user_idx"),
            F.coalesce("segment_idx", F.lit(0)).alias("segment_idx"),
            "history",
            "item_idx",
            F.coalesce("category_idx", F.lit(0)).alias("category_idx"),
            "weight",
            "ts",
        )
    )


def _history_before_day(engaged: DataFrame, days: DataFrame, history_len: int) -> DataFrame:
    """(user_id, day, history): the last ``history_len`` engaged items strictly before each day, newest first.

    Each engaged event carries the history ending with itself; a marker row at the day's midnight then takes
    the last such history before it. One sort per user instead of a range join of days against events; at
    an equal timestamp the marker sorts first, so an event at exactly midnight belongs to the day it opens.
    """
    upto = Window.partitionBy("user_id").orderBy("ts", "item_idx").rowsBetween(1 - history_len, 0)
    events = engaged.where(F.col("item_idx") > 0).select(
        "user_id",
        "ts",
        F.lit(1).alias("order"),
        F.lit(None).cast("date").alias("day"),
        F.reverse(F.collect_list("item_idx").over(upto)).alias("history"),
    )
    markers = days.select(
        "user_id",
        F.to_timestamp("day").alias("ts"),
        F.lit(0).alias("order"),
        "day",
        F.lit(None).cast("array<int>").alias("history"),
    )
    before = Window.partitionBy("user_id").orderBy("ts", "order").rowsBetween(Window.unboundedPreceding, -1)
    return (
        events.unionByName(markers)
        .withColumn("history", F.last("history", ignorenulls=True).over(before))
        .where(F.col("order") == 0)
        .select("user_id", "day", F.coalesce("history", F.array().cast("array<int>")).alias("history"))
    )


def build_ranking_examples(
    interactions: DataFrame,
    user_static: DataFrame,
    item_static: DataFrame,
    cut: Cutoffs,
    negatives_per_positive: int,
    seed: int,
    history_len: int = 20,
) -> DataFrame:
    """Labelled (user, item, day) pairs: engaged = 1, shown without engagement = 0, plus sampled negatives.

    Negatives are drawn in proportion to popularity (a unigram table joined on a seeded hash slot), so the ranker
    learns more than "popular vs not". ``item_static``: item_idx, category_idx, price_bucket, pop_bucket.
    Each example carries the user's history as of the start of its day (only events before that day), which
    is what the scorer sees for the days after its cutoff: the ranker derives its user-context inputs from it.
    """
    window = interactions.where(F.col("ts") < F.lit(ts_of(cut.eval_start)))
    pairs = window.groupBy("user_id", "item_idx", F.to_date("ts").alias("day")).agg(
        F.max((F.col("weight") > 0).cast("float")).alias("label"), F.max("ts").alias("ts")
    )
    positives = pairs.where(F.col("label") > 0)
    examples = pairs
    pop = item_static.where(F.col("pop_bucket") > 0).select("item_idx", "pop_bucket")
    # No item engaged in the popularity window before the cutoff (a sparse log): no table to sample from.
    if negatives_per_positive > 0 and not pop.isEmpty():
        total = F.sum(F.pow(F.lit(2.0), "pop_bucket")).over(Window.partitionBy())
        # Each item gets slots in proportion to 2**pop_bucket: a unigram table of about _SAMPLING_TABLE slots.
        table = (
            pop.withColumn(
                "n", F.greatest(F.lit(1), F.round(F.pow(F.lit(2.0), "pop_bucket") / total * _SAMPLING_TABLE))
            )
            .withColumn("slot", F.explode(F.sequence(F.lit(1), F.col("n").cast("int"))))
            .withColumn("slot", (F.row_number().over(Window.orderBy("item_idx", "slot")) - 1).cast("long"))
            .select("slot", F.col("item_idx").alias("neg_item"))
        )
        n_slots = table.count()
        sampled = (
            positives.withColumn("k", F.explode(F.sequence(F.lit(1), F.lit(negatives_per_positive))))
            # A hash of the pair, not rand(): rand depends on partitioning and row order, which change when
            # events outside the training window change, and the examples must not.
            .withColumn(
                "slot", F.pmod(F.xxhash64("user_id", "item_idx", "day", "k", F.lit(seed)), F.lit(n_slots))
            )
            .join(F.broadcast(table), "slot", "inner")
            .select("user_id", F.col("neg_item").alias("item_idx"), "day", F.lit(0.0).alias("label"), "ts")
            .join(pairs.select("user_id", "item_idx", "day"), ["user_id", "item_idx", "day"], "left_anti")
        )
        examples = pairs.unionByName(sampled)
    engaged = window.where(F.col("weight") > 0)
    history = _history_before_day(engaged, examples.select("user_id", "day").distinct(), history_len)
    return (
        examples.join(history, ["user_id", "day"], "left")
        .join(user_static, "user_id", "left")
        .join(F.broadcast(item_static), "item_idx", "left")
        .select(
            _split(cut).alias("split"),
            "label",
            F.coalesce("user_idx", F.lit(0)).alias("user_idx"),
            F.coalesce("segment_idx", F.lit(0)).alias("segment_idx"),
            "item_idx",
            F.coalesce("category_idx", F.lit(0)).alias("category_idx"),
            F.coalesce("price_bucket", F.lit(0)).alias("price_bucket"),
            F.coalesce("pop_bucket", F.lit(0)).alias("pop_bucket"),
            F.coalesce("history", F.array().cast("array<int>")).alias("history"),
            "ts",
        )
    )
