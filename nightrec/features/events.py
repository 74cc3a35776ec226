"""Clean events: drop what must not reach features, dedupe replays, apply event weights."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from nightrec.io import lake
from nightrec.settings import FeatureSettings
from schemas.spark import spark_type
from schemas.tables import INTERACTIONS, VOCAB


@dataclass(frozen=True)
class Cutoffs:
    """The global temporal split: train < valid_start <= valid < eval_start <= holdout < run_date."""

    run_date: date
    eval_start: date
    valid_start: date

    @classmethod
    def for_run(cls, run_date: date, cfg: FeatureSettings, holdout_days: int | None = None) -> Cutoffs:
        eval_start = run_date - timedelta(days=holdout_days or cfg.holdout_days)
        return cls(run_date, eval_start, eval_start - timedelta(days=cfg.valid_days))

    @property
    def holdout_days(self) -> int:
        return (self.run_date - self.eval_start).days

    @classmethod
    def of_night(cls, lake_root: str | Path, run_date: date, cfg: FeatureSettings) -> Cutoffs:
        """The split ``build_features`` chose for ``run_date`` (recorded on its vocabulary's marker), or the
        fixed-length one where the night's features predate that record."""
        marker = lake.read_marker(lake.partition_path(lake_root, VOCAB.name, run_date)) or {}
        days = (marker.get("cutoffs") or {}).get("holdout_days")
        return cls.for_run(run_date, cfg, int(days) if days else None)


def holdout_candidates(cfg: FeatureSettings) -> list[int]:
    """Holdout lengths tried, shortest first: ``holdout_days``, then a week longer each, up to the maximum."""
    out = list(range(cfg.holdout_days, max(cfg.max_holdout_days, cfg.holdout_days) + 1, 7))
    return out if out[-1] == max(cfg.max_holdout_days, cfg.holdout_days) else [*out, cfg.max_holdout_days]


def choose_cutoffs(clean: DataFrame, run_date: date, cfg: FeatureSettings) -> tuple[Cutoffs, dict[int, int]]:
    """The shortest holdout (from ``holdout_candidates``) with at least ``holdout_min_users`` evaluable users.

    A user is evaluable for a holdout starting at ``c`` when they engaged both before ``c`` (so the models
    know them) and on or after it (so there is something to find). On a busy log the default week already
    has thousands; on a sparse one (a few hundred users a week, most with a single day) it may have a few
    dozen, too few to tell two policies apart, so the window grows a week at a time, up to
    ``max_holdout_days``. It never grows past the point where less than ``min_train_share`` of the engaged
    events are left for training (before the validation window): a thin log keeps its training data. When no
    allowed length reaches the target, the allowed one with the most evaluable users is used.

    Returns:
        The cutoffs and the evaluable users of each length tried ({} when ``holdout_min_users`` is 0).
    """
    if cfg.holdout_min_users <= 0:
        return Cutoffs.for_run(run_date, cfg), {}
    days = holdout_candidates(cfg)
    engaged = clean.where(F.col("weight") > 0)
    spans = engaged.groupBy("user_id").agg(F.min("ts").alias("first"), F.max("ts").alias("last"))
    starts = {d: F.lit(ts_of(run_date - timedelta(days=d))) for d in days}
    trains = {d: F.lit(ts_of(Cutoffs.for_run(run_date, cfg, d).valid_start)) for d in days}
    users = spans.agg(
        *[
            F.count(F.when((F.col("first") < starts[d]) & (F.col("last") >= starts[d]), 1)).alias(f"d{d}")
            for d in days
        ]
    ).first()
    events = engaged.agg(
        F.count(F.lit(1)).alias("all"),
        *[F.count(F.when(F.col("ts") < trains[d], 1)).alias(f"d{d}") for d in days],
    ).first()
    counts = {d: int(users[f"d{d}"]) for d in days}
    allowed = [d for d in days if events[f"d{d}"] >= cfg.min_train_share * events["all"]] or days[:1]
    chosen = next((d for d in allowed if counts[d] >= cfg.holdout_min_users), None)
    if chosen is None:
        chosen = max(allowed, key=lambda d: (counts[d], -d))
    return Cutoffs.for_run(run_date, cfg, chosen), counts


def ts_of(d: date) -> datetime:
    """Midnight UTC of a date, as a naive datetime in the session time zone (UTC)."""
    return datetime.combine(d, time(0), tzinfo=UTC).replace(tzinfo=None)


def weight_column(cfg: FeatureSettings) -> F.Column:
    """Event weight from its type; ratings below ``min_rating`` weigh 0 (seen but disliked), unknown types 0.

    A rating at or above ``min_rating`` is a graded positive: its value scaled by ``event_weights.rating /
    rating_scale`` (``rating_weight = "value"``), or the constant ``event_weights.rating``.

    A CASE chain rather than a lookup in a literal map plus a coalesce: evaluated once per event, it compiles
    to a few inline string comparisons with no map access.
    """
    w = F.when((F.col("event_type") == "rating") & (F.col("value") < cfg.min_rating), F.lit(0.0))
    if cfg.rating_weight == "value":
        rating = float(cfg.event_weights.get("rating", 0.0)) / cfg.rating_scale
        w = w.when(F.col("event_type") == "rating", F.coalesce(F.col("value"), F.lit(0.0)) * F.lit(rating))
    for k, v in cfg.event_weights.items():
        w = w.when(F.col("event_type") == k, F.lit(float(v)))
    return w.otherwise(F.lit(0.0))


def catalog_index(items: DataFrame, item_map: DataFrame) -> DataFrame:
    """(item_id, item_idx) of the items in the catalog: the vocabulary also keeps items that have left it.

    A semi-join of the vocabulary (one row per id) with the catalog: a duplicated catalog row cannot duplicate
    an index, so no distinct (and its shuffle) is needed.
    """
    return item_map.select("item_id", "item_idx").join(items.select("item_id"), "item_id", "left_semi")


def _usable(events: DataFrame, catalog: DataFrame, run_date: date, cfg: FeatureSettings) -> DataFrame:
    return (
        events.where(F.col("ts") < F.lit(ts_of(run_date)))
        .where(F.col("event_type").isin(list(cfg.event_weights)))
        .where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull() & F.col("ts").isNotNull())
        # The catalog is small next to the events: one broadcast join, where the events are, drops unknown
        # items and swaps the id string for its index before the shuffle.
        .join(F.broadcast(catalog.select("item_id", "item_idx")), on="item_id", how="inner")
        .select("user_id", "item_idx", "event_type", "ts", "value")
    )


def clean_events(
    events: DataFrame, catalog: DataFrame, run_date: date, cfg: FeatureSettings, copies: bool = False
) -> DataFrame:
    """Events usable as of ``run_date``: before it, known type and item, exact replays removed, weighted.

    A replay is a second row with the same user, item, type and time. The kept ``value`` is the largest, so
    the result never depends on which copy a task happened to see first.

    Items are indexed before the shuffle: the result has ``item_idx`` and no ``item_id``, so an int rather
    than the id string goes through the shuffle and the replay key. The result is hash-partitioned by
    ``user_id``: the one shuffle of the events. The replay key contains the user, so the dedupe needs no
    shuffle of its own, and every per-user step downstream (features, histories, examples) finds its rows
    already in place.

    Args:
        catalog: ``item_id`` -> ``item_idx`` for the catalog's items (``catalog_index``); events of other items
            are dropped.
        copies: Add ``copies``, how many raw rows each kept row stands for (``duplicates_dropped`` reads it).
    """
    out = (
        _usable(events, catalog, run_date, cfg)
        .repartition("user_id")
        .groupBy("user_id", "item_idx", "event_type", "ts")
        .agg(F.max("value").alias("value"), F.count(F.lit(1)).alias("copies"))
        .withColumn("weight", weight_column(cfg))
    )
    return out if copies else out.drop("copies")


def duplicates_dropped(clean: DataFrame) -> int:
    """Replayed rows that ``clean_events`` dropped, from its ``copies`` column (no second pass over the events)."""
    return int(clean.agg(F.coalesce(F.sum(F.col("copies") - 1), F.lit(0))).first()[0])


def index_interactions(clean: DataFrame, user_map: DataFrame) -> DataFrame:
    """Clean events with the user's vocabulary index (``user_idx``, 0 where unknown), in the INTERACTIONS
    contract's columns and types but the item id.

    The user vocabulary grows with the users: it is hashed by user (a shuffled hash join), so the events,
    already partitioned by user, are neither shuffled nor sorted for it. Every feature keys items by index,
    so the id string stays out of what is cached and read many times; ``with_item_ids`` adds it back for the
    lake table.
    """
    cols = [F.col(c.name).cast(spark_type(c.dtype)) for c in INTERACTIONS.columns if c.name != "item_id"]
    cols += ["copies"] if "copies" in clean.columns else []
    return clean.join(user_map.hint("shuffle_hash"), "user_id", "left").fillna(0, ["user_idx"]).select(*cols)


def with_item_ids(interactions: DataFrame, catalog: DataFrame) -> DataFrame:
    """``interactions`` with each item's id, from the catalog index (``catalog_index``), broadcast and joined
    on the int: every indexed event's item is in the catalog, since ``clean_events`` keeps no other."""
    return interactions.join(F.broadcast(catalog.select("item_idx", "item_id")), "item_idx", "left")
