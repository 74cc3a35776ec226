"""Load what scoring needs from the lake into numpy, once: users, items and the seen-item index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from nightrec.io import lake
from nightrec.io.lists import pad_lists
from nightrec.settings import FeatureSettings
from schemas.tables import INTERACTIONS, ITEM_FEATURES, USER_FEATURES


@dataclass
class UserTable:
    user_id: np.ndarray  # object (str)
    user_idx: np.ndarray  # int64
    segment_idx: np.ndarray  # int64
    history: np.ndarray  # int64 [U, H], 0-padded, most recent first
    n_events: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.user_id)

    def take(self, sl: slice | np.ndarray) -> UserTable:
        return UserTable(
            self.user_id[sl], self.user_idx[sl], self.segment_idx[sl], self.history[sl], self.n_events[sl]
        )


@dataclass
class ItemTable:
    item_id: np.ndarray
    item_idx: np.ndarray
    category_idx: np.ndarray
    price_bucket: np.ndarray
    pop_bucket: np.ndarray
    popularity: np.ndarray
    available: np.ndarray  # bool
    recent: np.ndarray | None = None  # popularity_7d: weighted engagement of the last 7 days (the recs gate)

    def __len__(self) -> int:
        return len(self.item_id)


@dataclass
class SeenIndex:
    """CSR of seen item positions per user row: items ``indices[indptr[u]:indptr[u+1]]``, ascending in each
    row (so ``row * n_items + item`` over the rows in order is sorted)."""

    indptr: np.ndarray
    indices: np.ndarray

    def rows(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(row offsets within the chunk, item positions) of users start..stop-1."""
        lo, hi = self.indptr[start], self.indptr[stop]
        counts = np.diff(self.indptr[start : stop + 1])
        return np.repeat(np.arange(stop - start), counts), self.indices[lo:hi]


def _read(lake_root: str, table, ds: date, role: str | None = None) -> pa.Table:
    path = lake.require_partition(lake_root, table.name, ds)
    dataset = pads.dataset(str(path), format="parquet", partitioning="hive", exclude_invalid_files=True)
    flt = (pc.field("role") == role) if role else None
    cols = [c for c in table.names if c != "role"]
    return dataset.to_table(columns=cols, filter=flt)


def load_users(lake_root: str, ds: date, role: str, history_len: int) -> UserTable:
    t = _read(lake_root, USER_FEATURES, ds, role).sort_by("user_id")
    return UserTable(
        user_id=np.asarray(t["user_id"].to_pylist(), dtype=object),
        user_idx=t["user_idx"].to_numpy().astype(np.int64),
        segment_idx=t["segment_idx"].to_numpy().astype(np.int64),
        history=pad_lists(t["history"], history_len),
        n_events=t["n_events"].to_numpy().astype(np.int64),
    )


def load_items(lake_root: str, ds: date, role: str) -> ItemTable:
    t = _read(lake_root, ITEM_FEATURES, ds, role).sort_by("item_id")
    return ItemTable(
        item_id=np.asarray(t["item_id"].to_pylist(), dtype=object),
        item_idx=t["item_idx"].to_numpy().astype(np.int64),
        category_idx=t["category_idx"].to_numpy().astype(np.int64),
        price_bucket=t["price_bucket"].to_numpy().astype(np.int64),
        pop_bucket=t["pop_bucket"].to_numpy().astype(np.int64),
        popularity=t["popularity"].to_numpy().astype(np.float64),
        available=t["available"].to_numpy(zero_copy_only=False).astype(bool),
        recent=t["popularity_7d"].to_numpy().astype(np.float64),
    )


def load_interactions(
    lake_root: str, ds: date, start: date | None, stop: date, cfg: FeatureSettings, arrow: bool = False
) -> pd.DataFrame | pa.Table:
    """Interactions in [start, stop) that mark an item as seen or engaged (user_id, item_id, weight).

    ``arrow=True`` returns the Arrow table (for many users: no Python string per row).
    """
    path = lake.require_partition(lake_root, INTERACTIONS.name, ds)
    dataset = pads.dataset(str(path), format="parquet")
    ts = pc.field("ts")
    flt = (ts < _utc(stop)) & ~pc.field("event_type").isin(cfg.unseen_event_types)
    if start is not None:
        flt = flt & (ts >= _utc(start))
    tbl = dataset.to_table(columns=["user_id", "item_id", "weight"], filter=flt)
    return tbl if arrow else tbl.to_pandas()


def _utc(d: date) -> pa.Scalar:
    return pa.scalar(datetime.combine(d, time(0), tzinfo=UTC), pa.timestamp("us", tz="UTC"))


def positions(ids, universe: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``universe`` (-1 where absent), by Arrow's hash lookup.

    ``ids`` may be a numpy array or an Arrow (chunked) array: 20M seen pairs stay in Arrow, never becoming
    Python strings (a ``searchsorted`` over object arrays compares Python strings one by one).
    """
    if len(universe) == 0 or len(ids) == 0:
        return np.full(len(ids), -1, dtype=np.int64)
    value_set = pa.array(universe)
    values = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(np.asarray(ids, dtype=object))
    found = pc.index_in(values.cast(value_set.type), value_set=value_set)
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def build_seen(pairs: pd.DataFrame | pa.Table, users: UserTable, items: ItemTable) -> SeenIndex:
    """CSR index of (user row -> item positions) for the given (user_id, item_id) pairs."""
    cols = {
        c: pairs[c] if isinstance(pairs, pa.Table) else pairs[c].to_numpy(dtype=object)
        for c in ("user_id", "item_id")
    }
    u = positions(cols["user_id"], users.user_id)
    i = positions(cols["item_id"], items.item_id)
    keep = (u >= 0) & (i >= 0)
    n_items = max(len(items), 1)
    codes = u[keep].astype(np.int64) * n_items + i[keep]
    # Sorted, then each run kept once: np.unique's hash table took 41 s over the L tier's 39M pairs, this 3.6
    # (bench/recs_audit.py). Sorted codes also keep each user's items ascending (see SeenIndex).
    codes.sort()
    if len(codes):
        codes = codes[np.concatenate(([True], codes[1:] != codes[:-1]))]
    rows = codes // n_items
    indptr = np.zeros(len(users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(users)), out=indptr[1:])
    return SeenIndex(indptr, codes % n_items)


def lake_has(lake_root: str, table: str, ds: date) -> bool:
    return (Path(lake_root) / table / f"ds={ds.isoformat()}").exists()
