"""Clean events: drop what must not reach features, dedupe replays, apply event weights."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from nightrec.settings import FeatureSettings


@dataclass(frozen=True)
class Cutoffs:
    """The global temporal split: train < valid_start <= valid < eval_start <= holdout < run_date."""

    run_date: date
    eval_start: date
    valid_start: date

    @classmethod
    def for_run(cls, run_date: date, cfg: FeatureSettings) -> Cutoffs:
        from datetime import timedelta

        eval_start = run_date - timedelta(days=cfg.holdout_days)
        return cls(run_date, eval_start, eval_start - timedelta(days=cfg.valid_days))


def ts_of(d: date) -> datetime:
    """Midnight UTC of a date, as a naive datetime in the session time zone (UTC)."""
    return datetime.combine(d, time(0), tzinfo=UTC).replace(tzinfo=None)


def weight_column(cfg: FeatureSettings) -> F.Column:
    """Event weight from its type; ratings below ``min_rating`` weigh 0 (seen but disliked), unknown types 0.

    A CASE chain rather than a lookup in a literal map plus a coalesce: evaluated once per event, it compiles
    to a few inline string comparisons with no map access.
    """
    w = F.when((F.col("event_type") == "rating") & (F.col("value") < cfg.min_rating), F.lit(0.0))
    for k, v in cfg.event_weights.items():
        w = w.when(F.col("event_type") == k, F.lit(float(v)))
    return w.otherwise(F.lit(0.0))


def _usable(events: DataFrame, items: DataFrame, run_date: date, cfg: FeatureSettings) -> DataFrame:
    known_items = items.select("item_id").distinct()
    return (
        events.where(F.col("ts") < F.lit(ts_of(run_date)))
        .where(F.col("event_type").isin(list(cfg.event_weights)))
        .where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull() & F.col("ts").isNotNull())
        # The catalog is small next to the events: a broadcast semi-join keeps the events where they are.
        .join(F.broadcast(known_items), on="item_id", how="left_semi")
    )


def clean_events(
    events: DataFrame, items: DataFrame, run_date: date, cfg: FeatureSettings, copies: bool = False
) -> DataFrame:
    """Events usable as of ``run_date``: before it, known type and item, exact replays removed, weighted.

    A replay is a second row with the same user, item, type and time. The kept ``value`` is the largest, so
    the result never depends on which copy a task happened to see first.

    The result is hash-partitioned by ``user_id``: the one shuffle of the events. The replay key contains the
    user, so the dedupe needs no shuffle of its own, and every per-user step downstream (features, histories,
    examples) finds its rows already in place. Deduplicating on the four-column key directly would shuffle on
    that key and then again on the user.

    Args:
        copies: Add ``copies``, how many raw rows each kept row stands for (``duplicates_dropped`` reads it).
    """
    out = (
        _usable(events, items, run_date, cfg)
        .repartition("user_id")
        .groupBy("user_id", "item_id", "event_type", "ts")
        .agg(F.max("value").alias("value"), F.count(F.lit(1)).alias("copies"))
        .withColumn("weight", weight_column(cfg))
    )
    return out if copies else out.drop("copies")


def duplicates_dropped(clean: DataFrame) -> int:
    """Replayed rows that ``clean_events`` dropped, from its ``copies`` column (no second pass over the events)."""
    return int(clean.agg(F.coalesce(F.sum(F.col("copies") - 1), F.lit(0))).first()[0])


def index_interactions(clean: DataFrame, user_map: DataFrame, item_map: DataFrame) -> DataFrame:
    """Clean events with their vocabulary indices (``user_idx``, ``item_idx``; 0 where unknown).

    The item vocabulary is the catalog's, small next to the events, so it is broadcast. The user vocabulary
    grows with the users: it is hashed by user (a shuffled hash join), so the events, already partitioned by
    user, are neither shuffled nor sorted for it.
    """
    keep = ["user_id", "item_id", "user_idx", "item_idx", "event_type", "ts", "weight"]
    keep += ["copies"] if "copies" in clean.columns else []
    return (
        clean.join(user_map.hint("shuffle_hash"), "user_id", "left")
        .join(F.broadcast(item_map), "item_id", "left")
        .fillna(0, ["user_idx", "item_idx"])
        .select(*keep)
    )
