"""Training examples, all from events before the holdout window, split by time (never at random)."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from nightrec.features.events import Cutoffs, ts_of


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


def ranking_base(
    interactions: DataFrame,
    cut: Cutoffs,
    negatives_per_positive: int,
    seed: int,
    history_len: int = 20,
    days: list[date] | None = None,
) -> DataFrame:
    """The rows of the ranking examples that no later night changes: (user, item, day) pairs with their label,
    time and the user's history as of the start of the day (``ranking_days.SCHEMA``).

    Labelled pairs: engaged = 1, shown without engagement = 0, plus ``negatives_per_positive`` sampled
    negatives per positive, drawn from the same day's positives: an item is drawn in proportion to its
    engagement that day (so the ranker learns more than "popular vs not"), and only from items the log had
    reached by then. Every row of a day depends on the events before the end of that day alone, never on the
    night's cutoffs or catalog statistics, so a day's rows can be kept across nights (``ranking_days``).
    ``days``: build only these days (all days before the evaluation window when None).
    """
    window = interactions.where(F.col("ts") < F.lit(ts_of(cut.eval_start)))
    pairs = window.groupBy("user_id", "item_idx", F.to_date("ts").alias("day")).agg(
        F.max((F.col("weight") > 0).cast("float")).alias("label"), F.max("ts").alias("ts")
    )
    engaged = window.where(F.col("weight") > 0)
    if days is not None:
        pairs = pairs.where(F.col("day").isin(list(days)))
        # Only the users with rows on those days need their history: one user's events stay on one partition.
        engaged = engaged.join(pairs.select("user_id").distinct(), "user_id", "left_semi")
    examples = pairs
    if negatives_per_positive > 0:
        positives = pairs.where(F.col("label") > 0)
        # Each day's positives numbered 0..n-1 (ordered, so the draw is reproducible): a negative draws a slot.
        by_day = Window.partitionBy("day").orderBy("user_id", "item_idx")
        slots = positives.select(
            "day",
            (F.row_number().over(by_day) - 1).cast("long").alias("slot"),
            F.col("item_idx").alias("neg"),
        )
        sizes = positives.groupBy("day").agg(F.count("*").alias("n"))
        sampled = (
            positives.withColumn("k", F.explode(F.sequence(F.lit(1), F.lit(negatives_per_positive))))
            .join(F.broadcast(sizes), "day")
            # A hash of the pair, not rand(): rand depends on partitioning and row order, and a day's rows must
            # come out the same whichever night builds them.
            .withColumn(
                "slot", F.pmod(F.xxhash64("user_id", "item_idx", "day", "k", F.lit(seed)), F.col("n"))
            )
            .join(slots, ["day", "slot"])
            .select("user_id", F.col("neg").alias("item_idx"), "day", F.lit(0.0).alias("label"), "ts")
            # A draw of one of the user's own pairs that day (engaged or shown) is no negative.
            .join(pairs.select("user_id", "item_idx", "day"), ["user_id", "item_idx", "day"], "left_anti")
        )
        examples = pairs.unionByName(sampled)
    history = _history_before_day(engaged, examples.select("user_id", "day").distinct(), history_len)
    return examples.join(history, ["user_id", "day"], "left").select(
        "user_id",
        "item_idx",
        "day",
        "label",
        "ts",
        F.coalesce("history", F.array().cast("array<int>")).alias("history"),
    )


def finish_ranking_examples(
    base: DataFrame,
    user_static: DataFrame,
    item_static: DataFrame,
    cut: Cutoffs,
    broadcast_users: bool = False,
) -> DataFrame:
    """The night's ranking examples from their base rows: the split and tonight's user and item attributes.

    ``user_static``: user_id, user_idx, segment_idx; ``item_static``: item_idx, category_idx, price_bucket,
    pop_bucket (as of the evaluation cutoff). ``broadcast_users``: join the users without a shuffle (the base
    read back from the lake is not partitioned by user; a few million users broadcast cheaply).
    """
    users = F.broadcast(user_static) if broadcast_users else user_static
    return (
        base.join(users, "user_id", "left")
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
            "history",
            "ts",
        )
    )
