"""The whole precompute stage at scale: retrieve, filter, re-rank candidates, rules, write, for N users.

Usage: .venv/bin/python bench/precompute_stage.py [--users 1000000] [--items 100000] [--seen 20]
       [--candidates 200] [--top-k 20] [--work /tmp/nightrec-bench] [--out bench/results/precompute_stage.md]

A synthetic lake partition (user and item features in their contracts, N x seen interactions) is written first,
then `nightrec.scoring.precompute.precompute` (the stage's own function) runs in a child process on two-tower and
DeepFM models of the pipeline's shapes (random weights: the cost of a forward pass does not depend on them).
Reported: the child's wall time, users/s, and its peak RSS (the bound that must not grow with the user count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.io import lake
from schemas.arrow import to_arrow_schema
from schemas.tables import INTERACTIONS, ITEM_FEATURES, USER_FEATURES

DS = date(2026, 11, 1)
N_CATEGORIES, N_SEGMENTS, HISTORY = 50, 5, 20


def _fill(table, n: int, given: dict) -> pa.Table:
    """Every contract column: the given arrays, typed zeros/nulls for the rest (scoring does not read them)."""
    schema = to_arrow_schema(table)
    cols = []
    for field in schema:
        if field.name in given:
            cols.append(pa.array(given[field.name], field.type))
        elif pa.types.is_list(field.type) or pa.types.is_map(field.type) or field.nullable:
            cols.append(pa.nulls(n, field.type))
        elif pa.types.is_string(field.type):
            cols.append(pa.array(np.full(n, ""), field.type))
        elif pa.types.is_timestamp(field.type):
            cols.append(pa.array(np.zeros(n, dtype="datetime64[us]"), field.type))
        else:
            cols.append(pa.array(np.zeros(n), field.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _write(root: Path, table, tbl: pa.Table, role: str | None) -> None:
    path = lake.partition_path(root, table.name, DS)
    folder = path / f"role={role}" if role else path
    folder.mkdir(parents=True, exist_ok=True)
    if role:
        tbl = tbl.drop_columns(["role"])
    pq.write_table(tbl, folder / "part-00000.parquet", row_group_size=1 << 20)
    lake.write_marker(path, "bench", table=table.name, rows=tbl.num_rows)


def write_lake(root: Path, n_users: int, n_items: int, seen: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    user_ids = np.char.add("u", np.arange(n_users).astype(str))
    item_ids = np.char.add("i", np.arange(n_items).astype(str))
    # Zipf-like item popularity: real histories are skewed, and the seen filter meets the popular items.
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    weights /= weights.sum()
    seen_items = rng.choice(n_items, size=(n_users, seen), p=weights)
    cold = rng.random(n_users) < 0.03
    history = [list(map(int, row[:HISTORY] + 1)) for row in seen_items]
    users = {
        "role": np.full(n_users, "serve"),
        "user_id": user_ids,
        "user_idx": np.where(cold, 0, np.arange(1, n_users + 1)),
        "segment_idx": rng.integers(0, N_SEGMENTS + 1, n_users),
        "history": pa.array(
            [[] if c else h for c, h in zip(cold, history, strict=True)], pa.list_(pa.int32())
        ),
        "n_events": np.where(cold, 0, seen),
        "top_category_idx": rng.integers(0, N_CATEGORIES + 1, n_users),
    }
    _write(root, USER_FEATURES, _fill(USER_FEATURES, n_users, users), "serve")
    items = {
        "role": np.full(n_items, "serve"),
        "item_id": item_ids,
        "item_idx": np.arange(1, n_items + 1),
        "category_idx": rng.integers(1, N_CATEGORIES + 1, n_items),
        "price_bucket": rng.integers(0, 11, n_items),
        "popularity": weights * 1e6,
        "pop_bucket": np.clip(np.log2(weights * 1e6 + 1).astype(int), 0, 31),
        "available": rng.random(n_items) > 0.02,
    }
    _write(root, ITEM_FEATURES, _fill(ITEM_FEATURES, n_items, items), None)
    keep = ~np.repeat(cold, seen)
    flat = seen_items.reshape(-1)[keep]
    start = datetime.combine(DS - timedelta(days=30), datetime.min.time(), tzinfo=UTC)
    inter = {
        "user_id": np.repeat(user_ids, seen)[keep],
        "item_id": item_ids[flat],
        "user_idx": np.repeat(np.arange(1, n_users + 1), seen)[keep],
        "item_idx": flat + 1,
        "event_type": np.full(len(flat), "click"),
        "ts": pa.array(
            np.full(len(flat), np.datetime64(start.replace(tzinfo=None), "us")), pa.timestamp("us", "UTC")
        ),
        "weight": np.ones(len(flat)),
    }
    _write(root, INTERACTIONS, _fill(INTERACTIONS, len(flat), inter), None)


def score(root: Path, n_users: int, n_items: int, candidates: int, top_k: int) -> dict:
    import torch

    from nightrec.models.configs import DeepFMConfig, TwoTowerConfig
    from nightrec.models.deepfm import DeepFM
    from nightrec.models.two_tower import TwoTower
    from nightrec.scoring.precompute import precompute
    from nightrec.settings import Settings

    torch.manual_seed(0)
    sizes = {
        "user_id": n_users + 1,
        "item_id": n_items + 1,
        "category": N_CATEGORIES + 1,
        "segment": N_SEGMENTS + 1,
    }
    retrieval = TwoTower(TwoTowerConfig.from_vocab(sizes, history_len=HISTORY))
    ranking = DeepFM(DeepFMConfig.from_vocab(sizes))
    settings = Settings(
        home=root / "home",
        lake=str(root),
        scoring={"n_candidates": candidates, "top_k": top_k, "max_per_category": 5},
    )
    t0 = time.perf_counter()
    summary = precompute(settings, DS, retrieval, ranking, fingerprint="bench")
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "summary": summary.__dict__, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--seen", type=int, default=20)
    ap.add_argument("--candidates", type=int, default=200)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path("/tmp/nightrec-bench-precompute"))
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precompute_stage.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(score(a.work, a.users, a.items, a.candidates, a.top_k)))
        return
    shutil.rmtree(a.work, ignore_errors=True)
    t0 = time.perf_counter()
    write_lake(a.work, a.users, a.items, a.seen)
    gen = time.perf_counter() - t0
    load0 = os.getloadavg()[0]
    child = subprocess.run(
        [sys.executable, __file__, "--child", *sys.argv[1:]], check=True, capture_output=True, text=True
    )
    res = json.loads(child.stdout.strip().splitlines()[-1])
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    s = res["summary"]
    lines = [
        f"## Precompute stage: {a.users:,} users x {a.items:,} items ({platform.machine()}, {os.cpu_count()} CPUs, "
        f"{res['threads']} torch threads)",
        "",
        f"`nightrec.scoring.precompute.precompute` end to end: load users/items/seen from the lake, two-tower "
        f"retrieval of {a.candidates} candidates (seen and unavailable excluded), DeepFM re-rank of all "
        f"{a.candidates}, category cap 5, top-{a.top_k}, Parquet parts written as each chunk finishes.",
        "",
        "| users | seconds | users/s | peak RSS (GiB) | rows written | model users | fallback users |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {a.users:,} | {res['seconds']:.0f} | {a.users / res['seconds']:,.0f} | {rss:.2f} | {s['rows']:,} | "
        f"{s['model_users']:,} | {s['fallback_users']:,} |",
        "",
        f"Synthetic lake written in {gen:.0f} s ({a.seen} seen items per user, Zipf(0.8) items, 3% cold users). "
        f"Load average before scoring {load0:.2f}, after {os.getloadavg()[0]:.2f}.",
        "Goal (issue 5): 1M users within 15 minutes, peak memory under 8 GiB.",
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
