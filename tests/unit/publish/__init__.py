"""Publish protocol tests. Helpers shared by the modules of this package live here."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.publish import snapshot


def write_recs(
    folder: Path, n_users: int = 20, k: int = 3, *, fallback_every: int = 5, files: int = 2
) -> Path:
    """A small RECS dataset as Spark writes it: several part files, shuffled rows and a ``_SUCCESS`` marker.

    Users ``u0``..``u<n-1>`` get ``k`` items each; every ``fallback_every``-th user is a cold-start fallback.
    """
    rows = []
    for u in range(n_users):
        source = "fallback" if u % fallback_every == 0 else "model"
        for r in range(1, k + 1):
            rows.append(
                {
                    "user_id": f"u{u}",
                    "rank": r,
                    "item_id": f"i{(u + r) % 50}",
                    "score": 1.0 / r,
                    "source": source,
                }
            )
    rows = rows[::-1]  # unsorted on purpose: parts must come out sorted by (user_id, rank)
    folder.mkdir(parents=True, exist_ok=True)
    step = -(-len(rows) // files)
    for i in range(files):
        chunk = rows[i * step : (i + 1) * step]
        tbl = pa.Table.from_pylist(chunk).cast(
            pa.schema(
                [
                    ("user_id", pa.string()),
                    ("rank", pa.int32()),
                    ("item_id", pa.string()),
                    ("score", pa.float64()),
                    ("source", pa.string()),
                ]
            )
        )
        pq.write_table(tbl, folder / f"part-{i:05d}-c000.snappy.parquet")
    (folder / "_SUCCESS").write_bytes(b"")
    return folder


def publish(store, recs_dir: Path, ds: date, run_id: str, *, shard_count: int = 3):
    """Write a snapshot and return (manifest, manifest_key) without flipping the pointer."""
    manifest = snapshot.write_snapshot(
        recs_dir, store, ds=ds, run_id=run_id, shard_count=shard_count, meta={"top_k": 3}
    )
    return manifest, snapshot.manifest_key(ds, run_id)
