"""build_features: raw tables in, every feature table of one run date out (each behind a completion marker)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from nightrec import faults
from nightrec.features import events as ev
from nightrec.features import examples, point_in_time, ranking_days, vocab
from nightrec.io import lake, raw
from nightrec.settings import FeatureSettings
from schemas.results import FeaturesBuilt
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

# Up to this many users, the ranking examples join them by broadcast (the examples read back from the kept
# days are not partitioned by user, and shuffling 100M rows with their histories costs more than a broadcast).
BROADCAST_USERS = 5_000_000

OUTPUTS = (VOCAB, INTERACTIONS, USER_FEATURES, ITEM_FEATURES, RETRIEVAL_EXAMPLES, RANKING_EXAMPLES)


def code_fingerprint() -> str:
    """Hash of the feature code, so a code change invalidates yesterday's markers."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[2]
    for p in sorted([*Path(__file__).parent.glob("*.py"), root / "schemas" / "tables.py"]):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def previous_vocab(lake_root: str | Path, run_date: date) -> date | None:
    """The run date of the previous night's vocabulary: the newest complete one before ``run_date``."""
    return lake.latest_complete(lake_root, VOCAB.name, before=run_date)


def base_vocab(lake_root: str | Path) -> date | None:
    """The run date of the vocabulary a build extends: the largest complete one, of any date.

    An index is assigned once, ever. Every vocabulary extends the largest before it, so the largest holds
    every value any night has indexed, at the index it got: a re-run of a date (with an item added, say)
    appends to it instead of renumbering from the day before, and the models trained on the date's first
    build still read their ids right (``io.vocab_identity`` checks it). Ties go to the newest date.
    """
    root = Path(lake_root) / VOCAB.name
    sizes = []
    for p in root.glob("ds=*") if root.exists() else ():
        marker = lake.read_marker(p)
        if marker is not None and marker.get("table") == VOCAB.name:
            sizes.append((int(marker.get("rows") or 0), p.name[3:]))
    return date.fromisoformat(max(sizes)[1]) if sizes else None


def fingerprint(
    raw_root: str | Path, run_date: date, cfg: FeatureSettings, lake_root: str | Path | None = None
) -> str:
    """Hash of everything the night's feature tables depend on.

    The raw files, the run date, the settings and the feature code; and, given the lake, the previous night's
    vocabulary (its date and its marker's fingerprint): an id keeps its index across nights, so the indices
    of night N depend on night N-1's vocabulary, and through its fingerprint on every night before.
    """
    prev = None
    if lake_root is not None and (prev_ds := previous_vocab(lake_root, run_date)) is not None:
        marker = lake.read_marker(lake.partition_path(lake_root, VOCAB.name, prev_ds)) or {}
        prev = {"ds": prev_ds.isoformat(), "fingerprint": marker.get("fingerprint")}
    return lake.fingerprint_files(
        raw.raw_files(raw_root),
        {"ds": run_date.isoformat(), "cfg": cfg.model_dump(), "code": code_fingerprint(), "prev_vocab": prev},
    )


def parquet_rows(path: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in path.rglob("*.parquet"))


def write_table(df: DataFrame, table: Table, lake_root: str, ds: date, fp: str, **meta) -> int:
    """Conform, write to staging, swap into place, then the marker. Returns the row count."""
    lake.clear_staging(lake_root, table.name, ds)
    staging = lake.staging_path(lake_root, table.name, ds)
    writer = conform(df, table).write.mode("overwrite")
    if table.partition_by:
        writer = writer.partitionBy(*table.partition_by)
    writer.parquet(str(staging))
    final = lake.partition_path(lake_root, table.name, ds)
    lake.commit_staging(staging, final)
    # The worst moment to die: the data is in place but unmarked, so readers must refuse it.
    faults.fault("features.during_write", target=table.name)
    rows = parquet_rows(final)
    lake.write_marker(final, fp, table=table.name, rows=rows, **meta)
    return rows


def read_table(spark: SparkSession, lake_root: str, table: Table, ds: date) -> DataFrame:
    path = lake.require_partition(lake_root, table.name, ds)
    return spark.read.schema(to_struct_type(table)).parquet(str(path)).select(*table.names)


class _Writer:
    """Writes the tables of one run that are not already complete for its fingerprint (resume after a kill)."""

    def __init__(self, lake_root: str, ds: date, fp: str, force: bool) -> None:
        self.lake_root, self.ds, self.fp, self.force = lake_root, ds, fp, force
        self.rows: dict[str, int] = {}
        self.seconds: dict[str, float] = {}  # per table written, in the order written

    def done(self, table: Table) -> bool:
        """Whether ``table`` is complete for this run's fingerprint and will not be rewritten."""
        return not self.force and lake.is_complete(self.lake_root, table.name, self.ds, self.fp)

    def ensure(self, table: Table, make: Callable[[], DataFrame], **meta: Callable[[], object]) -> None:
        if self.done(table):
            marker = lake.read_marker(lake.partition_path(self.lake_root, table.name, self.ds)) or {}
            self.rows[table.name] = marker["rows"]
            return
        start = time.perf_counter()
        df = make()  # may do eager work the marker's metadata reports (the ranking examples' kept days)
        values = {k: f() for k, f in meta.items()}
        self.rows[table.name] = write_table(df, table, self.lake_root, self.ds, self.fp, **values)
        self.seconds[table.name] = round(time.perf_counter() - start, 1)


def build_features(
    spark: SparkSession,
    raw_root: str | Path,
    lake_root: str,
    run_date: date,
    cfg: FeatureSettings,
    force: bool = False,
) -> FeaturesBuilt:
    """Build every feature table of ``run_date`` whose marker does not match the input fingerprint.

    Tables are written in dependency order, each behind its own marker, so a run killed half way resumes
    with the first unmarked table; ``force`` rewrites all of them. The steps, in order: the catalog and the
    item vocabulary, the clean events, the split and the vocabulary, the interactions, item features, user
    features, then both example tables.
    """
    fp = fingerprint(raw_root, run_date, cfg, lake_root)
    if not force and all(lake.is_complete(lake_root, t.name, run_date, fp) for t in OUTPUTS):
        return _reused(lake_root, run_date, cfg, fp)
    night = _Night(spark, lake_root, run_date, cfg, _Writer(lake_root, run_date, fp, force))
    try:
        return _build(night, raw_root, fp)
    finally:
        night.release()  # also when a step fails: a long-lived session must not keep a dead night cached


def _reused(lake_root: str, run_date: date, cfg: FeatureSettings, fp: str) -> FeaturesBuilt:
    cut_info = _cut_info(ev.Cutoffs.of_night(lake_root, run_date, cfg))
    markers = {t.name: lake.read_marker(lake.partition_path(lake_root, t.name, run_date)) for t in OUTPUTS}
    rows = {name: m["rows"] for name, m in markers.items()}
    dups = markers[INTERACTIONS.name].get("duplicates_dropped")
    return FeaturesBuilt(
        ds=run_date.isoformat(),
        fingerprint=fp,
        skipped=True,
        rows=rows,
        cutoffs=cut_info,
        duplicates_dropped=dups,
    )


@dataclass
class _Night:
    """One build: its inputs, its writer, and the frames it caches (released when the build ends)."""

    spark: SparkSession
    lake_root: str
    run_date: date
    cfg: FeatureSettings
    out: _Writer
    cached: list[DataFrame] = field(default_factory=list)

    def cache(self, df: DataFrame) -> DataFrame:
        df = df.persist()
        self.cached.append(df)
        return df

    def read(self, table: Table) -> DataFrame:
        return read_table(self.spark, self.lake_root, table, self.run_date)

    def release(self) -> None:
        for df in reversed(self.cached):
            df.unpersist()
        self.cached.clear()


@dataclass(frozen=True)
class _Catalog:
    items: DataFrame  # raw items, one row per item id
    users: DataFrame  # raw users, one row per user id
    item_vocab: DataFrame  # the item part of tonight's vocabulary
    catalog: DataFrame  # item_id -> item_idx, availability
    prev: DataFrame | None  # the vocabulary tonight's extends


@dataclass(frozen=True)
class _Maps:
    user: DataFrame
    item: DataFrame
    category: DataFrame
    segment: DataFrame


def _build(night: _Night, raw_root: str | Path, fp: str) -> FeaturesBuilt:
    cat = _catalog(night, raw_root)
    events = raw.read_raw_table(night.spark, raw_root, "events")
    # Deduplicated once, partitioned by user, cached: read by the vocabulary, the interactions and the count.
    clean = night.cache(ev.clean_events(events, cat.catalog, night.run_date, night.cfg, copies=True))
    cut = _vocabulary(night, clean, cat)
    voc = night.read(VOCAB)
    maps = _Maps(
        vocab.lookup(voc, "user_id", "user_id", "user_idx"),
        vocab.lookup(voc, "item_id", "item_id", "item_idx"),
        vocab.lookup(voc, "category", "category", "category_idx"),
        vocab.lookup(voc, "segment", "segment", "segment_idx"),
    )
    inter = _interactions(night, clean, cat, maps)
    clean.unpersist()  # the interactions hold what the rest needs
    roles = (("eval", cut.eval_start), ("serve", night.run_date))
    item_static = _item_features(night, inter, cat, maps, roles)
    user_static = _user_features(night, inter, cat, maps, roles, item_static)
    days = _examples(night, inter, user_static, item_static, cut)
    out, lake_root, run_date = night.out, night.lake_root, night.run_date
    dups = (lake.read_marker(lake.partition_path(lake_root, INTERACTIONS.name, run_date)) or {}).get(
        "duplicates_dropped"
    )
    return FeaturesBuilt(
        ds=run_date.isoformat(),
        fingerprint=fp,
        skipped=False,
        rows=out.rows,
        cutoffs=_cut_info(cut),
        written=tuple(out.seconds),
        duplicates_dropped=dups,
        seconds=out.seconds,
        ranking_days=days,
    )


def _catalog(night: _Night, raw_root: str | Path) -> _Catalog:
    """The raw catalog and users (small, read by almost every table: cached once instead of re-scanned and
    re-deduplicated each time), the vocabulary tonight's extends, and its item part."""
    spark, lake_root = night.spark, night.lake_root
    items = night.cache(raw.read_raw_table(spark, raw_root, "items").dropDuplicates(["item_id"]))
    users = night.cache(raw.read_raw_table(spark, raw_root, "users").dropDuplicates(["user_id"]))
    base_ds = base_vocab(lake_root)
    # Materialised: the base may be this date's own vocabulary, which the write below replaces.
    prev = read_table(spark, lake_root, VOCAB, base_ds).localCheckpoint() if base_ds else None
    # The item part of the vocabulary comes first: it depends on the catalog alone, and the events are indexed
    # by it before their one shuffle (the user part depends on the clean events, so VOCAB is written after).
    if night.out.done(VOCAB):
        item_vocab = night.read(VOCAB).where(F.col("field") == "item_id")
    else:
        item_vocab = vocab.extend_vocab(prev, items.select(F.col("item_id").alias("value")), "item_id")
    item_vocab = night.cache(item_vocab)
    catalog = night.cache(ev.catalog_index(items, vocab.lookup(item_vocab, "item_id", "item_id", "item_idx")))
    return _Catalog(items, users, item_vocab, catalog, prev)


def _vocabulary(night: _Night, clean: DataFrame, cat: _Catalog) -> ev.Cutoffs:
    """Choose the split and write the vocabulary; returns the split.

    The holdout's length depends on the data (enough evaluable users); the vocabulary's marker records it,
    so a resumed run and every later stage use the split the first run chose.
    """
    if night.out.done(VOCAB):
        cut, evaluable = ev.Cutoffs.of_night(night.lake_root, night.run_date, night.cfg), None
    else:
        cut, evaluable = ev.choose_cutoffs(clean, night.run_date, night.cfg)

    def make_vocab() -> DataFrame:
        train_engaged = clean.where((F.col("ts") < F.lit(ev.ts_of(cut.eval_start))) & (F.col("weight") > 0))
        segments = cat.users.select(F.col("attributes")["segment"].alias("value"))
        prev = cat.prev
        return (
            vocab.extend_vocab(prev, train_engaged.select(F.col("user_id").alias("value")), "user_id")
            .unionByName(cat.item_vocab)
            .unionByName(
                vocab.extend_vocab(prev, cat.items.select(F.col("category").alias("value")), "category")
            )
            .unionByName(vocab.extend_vocab(prev, segments, "segment"))
        )

    night.out.ensure(
        VOCAB,
        make_vocab,
        cutoffs=lambda: {
            "holdout_days": cut.holdout_days,
            "evaluable_users": {str(k): v for k, v in (evaluable or {}).items()},
        },
    )
    return cut


def _interactions(night: _Night, clean: DataFrame, cat: _Catalog, maps: _Maps) -> DataFrame:
    """The interactions, cached and partitioned by user: the user features of both roles and both example
    tables group or window by user, so they shuffle nothing more. Cached in the lake table's types, less the
    item id (every feature keys items by index; the lake table gets the id back by a broadcast join). On a
    resumed run they are read back from the lake and shuffled by user once."""
    if night.out.done(INTERACTIONS):
        inter = night.cache(night.read(INTERACTIONS).drop("item_id").repartition("user_id"))
    else:
        inter = night.cache(ev.index_interactions(clean.drop("copies"), maps.user))
    night.out.ensure(
        INTERACTIONS,
        lambda: ev.with_item_ids(inter, cat.catalog),
        duplicates_dropped=lambda: ev.duplicates_dropped(clean),
    )
    return inter


def _item_features(night: _Night, inter: DataFrame, cat: _Catalog, maps: _Maps, roles) -> DataFrame:
    """Write the item features of both roles; returns the eval role's static fields by item index."""
    days = night.cfg.popularity_days

    def make_items() -> DataFrame:
        eval_, serve = (
            point_in_time.build_item_features(inter, cat.items, maps.item, maps.category, c, days, r)
            for r, c in roles
        )
        return eval_.unionByName(serve)

    night.out.ensure(ITEM_FEATURES, make_items)
    return (
        night.read(ITEM_FEATURES)
        .where(F.col("role") == "eval")
        .select("item_idx", "category_idx", "price_bucket", "pop_bucket")
        .where(F.col("item_idx") > 0)
    )


def _user_features(
    night: _Night, inter: DataFrame, cat: _Catalog, maps: _Maps, roles, item_static: DataFrame
) -> DataFrame:
    """Write the user features of both roles; returns each user's index and segment (the serve role's)."""
    item_categories = item_static.select("item_idx", "category_idx")
    item_prices = (
        cat.items.select("item_id", "price").join(cat.catalog, "item_id").select("item_idx", "price")
    )
    h = night.cfg.history_len

    def make_users() -> DataFrame:
        eval_, serve = (
            point_in_time.build_user_features(
                inter, cat.users, maps.user, maps.segment, item_categories, c, h, r, item_prices
            )
            for r, c in roles
        )
        return eval_.unionByName(serve)

    night.out.ensure(USER_FEATURES, make_users)
    return (
        night.read(USER_FEATURES)
        .where(F.col("role") == "serve")
        .select("user_id", "segment_idx")
        .join(maps.user, "user_id", "left")
        .fillna(0, ["user_idx"])
    )


def _examples(night: _Night, inter: DataFrame, user_static: DataFrame, item_static: DataFrame, cut) -> dict:
    """Write both example tables; returns the ranking examples' days covered and built tonight."""
    cfg = night.cfg
    night.out.ensure(
        RETRIEVAL_EXAMPLES,
        lambda: examples.build_retrieval_examples(inter, user_static, item_static, cut, cfg.history_len),
    )
    users = night.out.rows[USER_FEATURES.name] // 2  # one row per user and role
    kept: list[ranking_days.DayRows] = []

    def make_ranking() -> DataFrame:
        days = ranking_days.load(
            night.spark, night.lake_root, inter, cut, cfg, code_fingerprint(), force=night.out.force
        )
        kept.append(days)
        return examples.finish_ranking_examples(
            days.rows, user_static, item_static, cut, broadcast_users=users <= BROADCAST_USERS
        )

    def counts() -> dict[str, int]:  # empty: the table was complete, nothing was loaded
        return {"days": kept[0].days, "built": kept[0].built} if kept else {}

    night.out.ensure(RANKING_EXAMPLES, make_ranking, ranking_days=counts)
    return counts()


def _cut_info(cut: ev.Cutoffs) -> dict[str, str]:
    return {k: str(v) for k, v in asdict(cut).items()}
