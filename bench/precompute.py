"""Exact top-N retrieval: nightrec's production Scorer against faiss-cpu IndexFlatIP, same random embeddings.

Usage: .venv/bin/python bench/precompute.py [--users 1000000] [--items 100000] [--dim 64] [--k 100]
       [--chunk 4096] [--seen 20] [--out bench/results/precompute.md]

Our path is `nightrec.scoring.score.Scorer.score` itself (matmul in chunks, unavailable and seen items masked to
-inf before top-k) with a stand-in two-tower that returns the random vectors; FAISS gets the same vectors and
`search(k)`, and does no masking (so the comparison favours FAISS). faiss-cpu is a benchmark-only dependency
(`pip install faiss-cpu`). Peak RSS is reported for the process; both use every core (torch and OpenMP).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch

from nightrec.scoring.inputs import ItemTable, SeenIndex, UserTable
from nightrec.scoring.score import Scorer, ScoringConfig


class RandomTowers(torch.nn.Module):
    """Fixed L2-normalised vectors in place of the trained towers (what the matmul and top-k see)."""

    def __init__(self, users: np.ndarray, items: np.ndarray):
        super().__init__()
        self.u, self.i = torch.from_numpy(users), torch.from_numpy(items)

    def user_vectors(self, user_idx, segment_idx, history):
        return self.u[user_idx]

    def item_vectors(self, item_idx, category_idx):
        return self.i[item_idx]


def _unit(rng, n, d):
    x = rng.standard_normal((n, d), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--seen", type=int, default=20, help="seen items per user, masked by our path")
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precompute.md")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    uv, iv = _unit(rng, a.users, a.dim), _unit(rng, a.items, a.dim)
    n = a.items
    items = ItemTable(
        np.arange(n).astype(str).astype(object),
        np.arange(n),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        rng.random(n),
        rng.random(n) > 0.02,
    )
    seen_idx = rng.integers(0, n, size=(a.users, a.seen))
    seen = SeenIndex(np.arange(0, a.users * a.seen + 1, a.seen), seen_idx.reshape(-1))
    users = UserTable(
        np.arange(a.users).astype(str).astype(object),
        np.arange(a.users),
        np.zeros(a.users, np.int64),
        np.zeros((a.users, 1), np.int64),
        np.ones(a.users, np.int64),
    )
    scorer = Scorer(RandomTowers(uv, iv), None, items, ScoringConfig(a.k, a.k, 0.0, None))
    t0 = time.perf_counter()
    for start in range(0, a.users, a.chunk):
        scorer.score(users.take(slice(start, start + a.chunk)), seen, start)
    ours = time.perf_counter() - t0
    rss_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines = [
        f"## Exact top-{a.k} retrieval: {a.users:,} users x {a.items:,} items, d={a.dim} "
        f"({platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__})",
        "",
        "| engine | seconds | users/s | notes |",
        "| --- | --- | --- | --- |",
        f"| nightrec Scorer (fp32 matmul + mask + topk, chunk {a.chunk}) | {ours:.1f} | {a.users / ours:,.0f} "
        f"| masks {a.seen} seen + unavailable items; peak RSS {rss_ours:.1f} GiB |",
    ]
    if not a.skip_faiss:
        import faiss

        index = faiss.IndexFlatIP(a.dim)
        index.add(iv)
        t0 = time.perf_counter()
        for start in range(0, a.users, a.chunk):
            index.search(uv[start : start + a.chunk], a.k)
        theirs = time.perf_counter() - t0
        lines.append(
            f"| faiss-cpu {faiss.__version__} IndexFlatIP.search | {theirs:.1f} | {a.users / theirs:,.0f} "
            f"| no masking |"
        )
        lines += ["", f"Ratio (ours / FAISS users/s): {theirs / ours:.2f}x."]
    lines += [
        "",
        f"Load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine slows both).",
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
