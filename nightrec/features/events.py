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
    """Event weight from its type; ratings below ``min_rating`` weigh 0 (seen but disliked)."""
    mapping = F.create_map(*[x for k, v in cfg.event_weights.items() for x in (F.lit(k), F.lit(float(v)))])
    w = F.coalesce(mapping[F.col("event_type")], F.lit(0.0))
    return F.when(
        (F.col("event_type") == "rating") & (F.col("value") < cfg.min_rating), F.lit(0.0)
    ).otherwise(w)


def _usable(events: DataFrame, items: DataFrame, run_date: date, cfg: FeatureSettings) -> DataFrame:
    known_items = items.select("item_id").distinct()
    return (
        events.where(F.col("ts") < F.lit(ts_of(run_date)))
        .where(F.col("event_type").isin(list(cfg.event_weights)))
        .where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull() & F.col("ts").isNotNull())
        .join(known_items, on="item_id", how="left_semi")
    )


def clean_events(events: DataFrame, items: DataFrame, run_date: date, cfg: FeatureSettings) -> DataFrame:
    """Events usable as of ``run_date``: before it, known type and item, exact replays removed, weighted.

    A replay is a second row with the same user, item, type and time. The kept ``value`` is the largest, so
    the result never depends on which copy a task happened to see first.
    """
    return (
        _usable(events, items, run_date, cfg)
        .groupBy("user_id", "item_id", "event_type", "ts")
        .agg(F.max("value").alias("value"))
        .withColumn("weight", weight_column(cfg))
    )


def count_duplicates(
    events: DataFrame, items: DataFrame, run_date: date, cfg: FeatureSettings, clean: DataFrame
) -> int:
    """Replayed rows that ``clean_events`` dropped: usable rows minus kept rows (``clean`` is its output)."""
    return _usable(events, items, run_date, cfg).count() - clean.count()
