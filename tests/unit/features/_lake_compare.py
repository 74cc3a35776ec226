"""Helpers shared by the feature build tests: copy raw data, edit events, compare lake tables row for row."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from nightrec.io import lake
from schemas.tables import EVENTS, FEATURE_TABLES

# What training and evaluation read, as (column, values kept) of each table (None = every row). The
# retrieval examples' holdout split is the serving refit's, read only after the evaluated model is trained.
TRAINING_SIDE = {
    "user_features": ("role", ("eval",)),
    "item_features": ("role", ("eval",)),
    "retrieval_examples": ("split", ("train", "valid")),
    "ranking_examples": None,
}


def read_frame(
    lake_root: str | Path, table: str, ds: date, role: str | tuple[str, tuple[str, ...]] | None = None
) -> pd.DataFrame:
    """A table partition as a pandas frame sorted on every column (row order is not part of the contract).

    ``role``: keep rows of that ``role``, or ``(column, values)``: rows whose ``column`` is one of ``values``.
    """
    path = lake.require_partition(lake_root, table, ds)
    t = pads.dataset(str(path), format="parquet", partitioning="hive", exclude_invalid_files=True).to_table()
    df = t.to_pandas()
    if isinstance(role, str):
        df = df[df["role"] == role]
    elif role is not None:
        df = df[df[role[0]].isin(role[1])]
    df = df[FEATURE_TABLES[table].names].reset_index(drop=True)
    key = df.map(lambda v: repr(list(v)) if isinstance(v, np.ndarray | list) else repr(v))
    return df.iloc[key.sort_values(list(key.columns)).index].reset_index(drop=True)


def vocab_users(lake_root: str | Path, ds: date) -> pd.DataFrame:
    v = read_frame(lake_root, "vocab", ds)
    return v[v["field"] == "user_id"].reset_index(drop=True)


def assert_same_frames(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    assert len(a) == len(b), f"{what}: {len(a)} rows vs {len(b)}"
    pd.testing.assert_frame_equal(a, b, check_exact=True, obj=what)


def copy_raw(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_events_from(raw_root: Path, start: date, seed: int = 0) -> dict[str, int]:
    """Add, remove and change events at or after ``start``; earlier events are left byte-identical.

    Events before ``start`` go back into their own files untouched; the edited rows go to a new part file,
    and the original files lose their late rows. Returns how many rows were added, removed and changed.
    """
    rng = np.random.default_rng(seed)
    t0 = datetime.combine(start, datetime.min.time())
    files = sorted((raw_root / EVENTS.name).glob("*.parquet"))
    late_parts, counts = [], {"added": 0, "removed": 0, "changed": 0}
    for f in files:
        t = pq.read_table(f)
        late = pa.compute.greater_equal(t["ts"], pa.scalar(t0, t.schema.field("ts").type))
        pq.write_table(t.filter(pa.compute.invert(late)), f)
        late_parts.append(t.filter(late).to_pandas())
    late = pd.concat(late_parts, ignore_index=True)
    keep = rng.random(len(late)) >= 0.3
    counts["removed"] = int((~keep).sum())
    late = late[keep].reset_index(drop=True)
    change = rng.random(len(late)) < 0.3
    late.loc[change, "event_type"] = np.where(rng.random(int(change.sum())) < 0.5, "purchase", "click")
    late.loc[change, "item_id"] = late["item_id"].sample(frac=1.0, random_state=seed).to_numpy()[change]
    counts["changed"] = int(change.sum())
    items = pq.read_table(raw_root / "items").column("item_id").to_pylist()
    n_new = 500
    added = pd.DataFrame(
        {
            # Known users, brand-new users and every catalog item: new vocabularies would show up here.
            "user_id": rng.choice(
                [*late["user_id"].unique()[:50], *[f"u_new_{i}" for i in range(40)]], n_new
            ),
            "item_id": rng.choice(items, n_new),
            "event_type": rng.choice(["impression", "click", "cart", "purchase"], n_new),
            "ts": [t0 + timedelta(seconds=int(s)) for s in rng.integers(0, 6 * 86400, n_new)],
            "value": np.nan,
            "session_id": "s_new",
        }
    )
    counts["added"] = n_new
    out = pd.concat([late, added], ignore_index=True)
    schema = pq.read_schema(files[0])
    pq.write_table(
        pa.Table.from_pandas(out, schema=schema, preserve_index=False), files[0].with_name("zz-edit.parquet")
    )
    return counts
