"""Example tables from the lake -> tensors; batches by a seeded shuffled index permutation.

A night's training examples are bounded by its budget (``train.max_examples`` per model): a split larger than
that is read as a stream of Arrow record batches, each thinned by a seeded uniform draw, so memory holds the
sample, never the split (100M events make tens of millions of examples; 3M rows with a 20-item history are
~0.5 GB as tensors). The sample keeps every day and user in proportion, unlike the newest rows. What fits is
a few int tensors, so there is no per-row Dataset/DataLoader: a batch is one ``index_select`` per column.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from nightrec.io import lake
from nightrec.io.lists import pad_lists
from schemas.tables import ITEM_FEATURES, RANKING_EXAMPLES, RANKING_FIELDS, RETRIEVAL_EXAMPLES, VOCAB

VOCAB_FIELDS = ("user_id", "item_id", "category", "segment")


class _Columns:
    """Shared behaviour of the tensor bundles: every field is a tensor (or None) with the same first dimension."""

    def __len__(self) -> int:
        return int(getattr(self, fields(self)[0].name).shape[0])  # type: ignore[arg-type]

    def _map(self, fn):
        values = {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]
        return type(self)(**{k: fn(v) if v is not None else None for k, v in values.items()})

    def take(self, idx: torch.Tensor):
        """The rows at ``idx`` (a LongTensor), as the same type."""
        return self._map(lambda t: t.index_select(0, idx))

    def to(self, device: torch.device | str):
        return self._map(lambda t: t.to(device))

    @classmethod
    def concat(cls, parts: list):
        """The rows of ``parts`` (of this type) one after another."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        cols = {n: [getattr(p, n) for p in parts] for n in names}
        return cls(**{n: None if any(v is None for v in vs) else torch.cat(vs) for n, vs in cols.items()})


@dataclass
class RetrievalTensors(_Columns):
    """Retrieval examples: one weighted positive (user, item) per row."""

    user_idx: torch.Tensor  # int64 [N]
    segment_idx: torch.Tensor  # int64 [N]
    history: torch.Tensor  # int64 [N, H], 0-padded, most recent first
    item_idx: torch.Tensor  # int64 [N]
    category_idx: torch.Tensor  # int64 [N]
    weight: torch.Tensor  # float32 [N]
    day: torch.Tensor | None = None  # int64 [N], days since 1970-01-01 of the event (point-in-time inputs)

    def packed_users(self) -> torch.Tensor:
        """``[N, 2 + H]`` = ``[user_idx, segment_idx, history...]``: the two-tower ``forward`` input."""
        return torch.cat([self.user_idx[:, None], self.segment_idx[:, None], self.history], dim=1)


@dataclass
class RankingTensors(_Columns):
    """Ranking examples: fields (the table's ``RANKING_FIELDS``, or the model's ``RANKER_FIELDS`` once
    derived) and a 0/1 label; the history the derived fields come from while it is still needed."""

    x: torch.Tensor  # int64 [N, F]
    label: torch.Tensor  # float32 [N]
    history: torch.Tensor | None = None  # int64 [N, H], 0-padded, most recent first
    day: torch.Tensor | None = None  # int64 [N], days since 1970-01-01 of the example (point-in-time inputs)


def iter_batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``: shuffled by ``generator`` when given, in order otherwise.

    The last batch may be smaller; nothing is dropped.
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.split(batch_size)


def shard_batches(
    n: int, batch_size: int, generator: torch.Generator, rank: int, world_size: int
) -> Iterator[torch.Tensor]:
    """This process's part of each batch of :func:`iter_batches`, for one of ``world_size`` processes.

    Every process draws the same seeded permutation (same generator state) and keeps the slice
    ``rank::world_size`` of it, in batches of ``batch_size // world_size``: together the processes' k-th
    batches hold the rows of the one-process k-th batch of ``batch_size`` (when it divides). The permutation
    is padded with its own head to a multiple of ``world_size`` (as ``DistributedSampler`` does), so every
    process takes the same number of equal batches and no collective waits on a process that has finished.

    Example:
        >>> torch.randperm(5, generator=torch.Generator().manual_seed(0)).tolist()
        [4, 0, 1, 3, 2]
        >>> [[b.tolist() for b in shard_batches(5, 4, torch.Generator().manual_seed(0), r, 2)] for r in (0, 1)]
        [[[4, 1], [2]], [[0, 3], [4]]]
    """
    order = torch.randperm(n, generator=generator)
    if world_size == 1:
        yield from order.split(batch_size)
        return
    padded = order[torch.arange(-(-n // world_size) * world_size) % max(n, 1)] if n else order
    yield from padded[rank::world_size].split(max(batch_size // world_size, 1))


def _as_date(ds: date | str) -> date:
    return ds if isinstance(ds, date) else date.fromisoformat(ds)


@dataclass(frozen=True)
class Sample:
    """At most ``max_rows`` rows of a split (None = all), drawn uniformly with ``seed``; ``rows``: how many the
    split (and filter) holds, where the caller has counted them already (None = counted here)."""

    max_rows: int | None = None
    seed: int = 0
    rows: int | None = None


_STREAM_BATCH = 131_072  # rows per record batch while sampling: bounds the memory of the read itself


def count_rows(lake_root: str | Path, table: str, ds: date | str, split: str, extra=None) -> int:
    """Rows of one split (and filter) of ``table/ds=<ds>``, from the files' metadata where possible.

    Raises:
        StageInputMissing: the partition is absent or incomplete.
    """
    dataset, flt = _split_dataset(lake_root, table, ds, split, extra)
    return dataset.count_rows(filter=flt)


def _split_dataset(lake_root, table, ds, split, extra):
    path = lake.require_partition(lake_root, table, _as_date(ds))
    dataset = pads.dataset(str(path), format="parquet", partitioning="hive")
    flt = pc.field("split") == split
    return dataset, flt if extra is None else flt & extra


def _read_split(
    lake_root: str | Path,
    table: str,
    ds: date | str,
    split: str,
    columns: list[str],
    extra=None,
    sample: Sample = Sample(),
) -> pa.Table:
    """The split's rows in file order; with ``sample.max_rows`` below its size, a seeded uniform sample of
    about that many, read batch by batch (the scan is ordered, so the same files give the same sample)."""
    dataset, flt = _split_dataset(lake_root, table, ds, split, extra)
    total = 0
    if sample.max_rows is not None:
        total = sample.rows if sample.rows is not None else dataset.count_rows(filter=flt)
    if sample.max_rows is None or total <= sample.max_rows:
        return dataset.to_table(columns=columns, filter=flt)
    share = sample.max_rows / total
    kept = []
    batches = dataset.to_batches(columns=columns, filter=flt, batch_size=_STREAM_BATCH)
    for i, batch in enumerate(batches):
        draw = np.random.default_rng([sample.seed, i]).random(batch.num_rows)
        kept.append(batch.filter(pa.array(draw < share)))
    schema = dataset.schema
    return pa.Table.from_batches(kept, schema=pa.schema([schema.field(c) for c in columns]))


def _utc(d: date) -> pa.Scalar:
    return pa.scalar(datetime.combine(d, time(0), tzinfo=UTC), pa.timestamp("us", tz="UTC"))


def _ints(t: pa.Table, name: str) -> torch.Tensor:
    return torch.from_numpy(t[name].to_numpy().astype(np.int64))


def load_retrieval_examples(
    lake_root: str | Path,
    ds: date | str,
    split: str,
    history_len: int,
    with_day: bool = False,
    sample: Sample = Sample(),
) -> RetrievalTensors:
    """Load one split of ``retrieval_examples/ds=<ds>`` into tensors.

    Args:
        lake_root: Lake root folder.
        ds: Partition date (``date`` or ``YYYY-MM-DD``).
        split: ``train``, ``valid`` or ``holdout``.
        history_len: Width of the padded history (longer histories keep their most recent items).
        with_day: Also load each example's day (for inputs computed as of that day).
        sample: At most this many rows, drawn uniformly (the night's budget); default all.

    Returns:
        The examples; empty tensors when the split has no rows.

    Raises:
        StageInputMissing: the partition is absent or incomplete.
    """
    cols = [c for c in RETRIEVAL_EXAMPLES.names if c not in ("split", *(() if with_day else ("ts",)))]
    t = _read_split(lake_root, RETRIEVAL_EXAMPLES.name, ds, split, cols, sample=sample)
    return RetrievalTensors(
        user_idx=_ints(t, "user_idx"),
        segment_idx=_ints(t, "segment_idx"),
        history=torch.from_numpy(pad_lists(t["history"], history_len)),
        item_idx=_ints(t, "item_idx"),
        category_idx=_ints(t, "category_idx"),
        weight=torch.from_numpy(t["weight"].to_numpy().astype(np.float32)),
        day=_days(t["ts"]) if with_day else None,
    )


def load_ranking_examples(
    lake_root: str | Path,
    ds: date | str,
    split: str,
    history_len: int | None = None,
    start: date | None = None,
    stop: date | None = None,
    with_day: bool = False,
    positives_only: bool = False,
    sample: Sample = Sample(),
) -> RankingTensors:
    """Load one split of ``ranking_examples/ds=<ds>`` into tensors (fields in ``RANKING_FIELDS`` order).

    Args:
        lake_root: Lake root folder.
        ds: Partition date.
        split: ``train`` or ``valid``.
        history_len: Also load each example's point-in-time history, padded to this width; None = skip it.
        start: Only examples on or after this day (UTC); None = from the first.
        stop: Only examples before this day; None = to the last.
        with_day: Also load each example's day (for inputs computed as of that day).
        positives_only: Only rows labelled 1.
        sample: At most this many rows (after the filters), drawn uniformly; default all.

    Raises:
        StageInputMissing: the partition is absent or incomplete.
    """
    cols = [*RANKING_FIELDS, "label", *(["history"] if history_len else []), *(["ts"] if with_day else [])]
    t = _read_split(
        lake_root, RANKING_EXAMPLES.name, ds, split, cols, ranking_filter(start, stop, positives_only), sample
    )
    x = np.stack([t[f].to_numpy().astype(np.int64) for f in RANKING_FIELDS], axis=1) if t.num_rows else None
    return RankingTensors(
        x=torch.from_numpy(x) if x is not None else torch.zeros((0, len(RANKING_FIELDS)), dtype=torch.long),
        label=torch.from_numpy(t["label"].to_numpy().astype(np.float32)),
        history=torch.from_numpy(pad_lists(t["history"], history_len)) if history_len else None,
        day=_days(t["ts"]) if with_day else None,
    )


def ranking_filter(start: date | None, stop: date | None, positives_only: bool = False):
    """The Arrow filter of :func:`load_ranking_examples`'s days and labels (None = every row)."""
    ts, out = pc.field("ts"), None
    bounds = (
        ts >= _utc(start) if start else None,
        ts < _utc(stop) if stop else None,
        pc.field("label") > 0.5 if positives_only else None,
    )
    for bound in bounds:
        if bound is not None:
            out = bound if out is None else out & bound
    return out


def _days(ts: pa.ChunkedArray) -> torch.Tensor:
    us = ts.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    return torch.from_numpy((us // (86_400 * 1_000_000)).astype(np.int64))


def vocab_sizes(lake_root: str | Path, ds: date | str) -> dict[str, int]:
    """Table size per vocabulary field: ``max idx + 1`` (1 for a field with no values: only the OOV row).

    Raises:
        StageInputMissing: the partition is absent or incomplete.
    """
    path = lake.require_partition(lake_root, VOCAB.name, _as_date(ds))
    t = pads.dataset(str(path), format="parquet").to_table(columns=["field", "idx"])
    grouped = t.group_by("field").aggregate([("idx", "max")])
    found = dict(zip(grouped["field"].to_pylist(), grouped["idx_max"].to_pylist(), strict=True))
    return {f: int(found.get(f) or 0) + 1 for f in VOCAB_FIELDS}


def item_categories(n_items: int, *examples: RetrievalTensors) -> torch.Tensor:
    """``[n_items]`` category of each item index, as seen in the examples (0 where never seen).

    The retrieval metric scores every item through the item tower, which needs each item's category.
    """
    cats = torch.zeros(n_items, dtype=torch.long)
    for ex in examples:
        keep = ex.item_idx < n_items
        cats[ex.item_idx[keep]] = ex.category_idx[keep]
    return cats


def load_item_fields(lake_root: str | Path, ds: date | str, n_items: int) -> torch.Tensor:
    """``[n_items, 4]`` ranking fields of each item index from ``item_features`` as of the holdout start.

    Columns: item_idx, category_idx, price_bucket, pop_bucket (all 0 for an index with no row).

    Raises:
        StageInputMissing: the partition is absent or incomplete.
    """
    path = lake.require_partition(lake_root, ITEM_FEATURES.name, _as_date(ds))
    dataset = pads.dataset(str(path), format="parquet", partitioning="hive")
    cols = ["item_idx", "category_idx", "price_bucket", "pop_bucket"]
    t = dataset.to_table(columns=cols, filter=pc.field("role") == "eval")
    idx = _ints(t, "item_idx")
    keep = (idx > 0) & (idx < n_items)
    out = torch.zeros((n_items, len(cols)), dtype=torch.long)
    out[idx[keep]] = torch.stack([_ints(t, c) for c in cols], dim=1)[keep]
    return out
