"""Exact top-N retrieval: nightrec's production Scorer against faiss-cpu IndexFlatIP, same random embeddings.

Usage: .venv/bin/python bench/precompute.py [--users 1000000] [--items 100000] [--dim 64] [--k 100]
       [--chunk 4096] [--seen 20] [--fp32] [--ann] [--out bench/results/precompute.md]

Our path is `nightrec.scoring.score.Scorer.score` itself (unavailable items left out of the index, seen items
excluded, exact two-level top-k; bf16 product + compiled selection + fp32 rescoring where the CPU has native
bf16) with a stand-in two-tower that returns the random vectors; FAISS gets the same vectors and `search(k)`,
and does no masking (so the comparison favours FAISS). Recall@k of each engine is measured against a
brute-force fp32 top-k with the same exclusions on a sample of users. `--fp32` adds our path forced to fp32;
`--ann` adds FAISS IndexIVFFlat (`scoring.index = "ivf"`) at a few probe counts with its recall. Peak RSS is
reported for the process.
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


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)]))


def _truth(uv, iv, allowed, seen_idx, rows, k):
    """Brute-force fp32 top-k with the same exclusions, for the sampled users."""
    logits = torch.from_numpy(uv[rows]) @ torch.from_numpy(iv).T
    logits[:, ~torch.from_numpy(allowed)] = float("-inf")
    r = np.repeat(np.arange(len(rows)), seen_idx.shape[1])
    logits[torch.from_numpy(r), torch.from_numpy(seen_idx[rows].reshape(-1))] = float("-inf")
    return torch.topk(logits, k, dim=1).indices.numpy()


def _run_scorer(scorer, users, seen, n_users, chunk, sample):
    found = {}
    t0 = time.perf_counter()
    for start in range(0, n_users, chunk):
        res = scorer.score(users.take(slice(start, start + chunk)), seen, start)
        hit = sample[(sample >= start) & (sample < start + chunk)]
        for u in hit:
            found[int(u)] = res.items[u - start]
    return time.perf_counter() - t0, np.stack([found[int(u)] for u in sample])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--chunk", type=int, default=4096)
    ap.add_argument("--seen", type=int, default=20, help="seen items per user, excluded by our path")
    ap.add_argument("--sample", type=int, default=2000, help="users whose recall is checked")
    ap.add_argument("--fp32", action="store_true", help="also time our path forced to fp32")
    ap.add_argument("--ann", action="store_true", help="also time FAISS IndexIVFFlat through the Scorer")
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "precompute.md")
    a = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    uv, iv = _unit(rng, a.users, a.dim), _unit(rng, a.items, a.dim)
    n = a.items
    available = rng.random(n) > 0.02
    items = ItemTable(
        np.arange(n).astype(str).astype(object),
        np.arange(n),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        np.zeros(n, np.int64),
        rng.random(n),
        available,
    )
    seen_idx = np.sort(rng.integers(0, n, size=(a.users, a.seen)), axis=1)
    seen = SeenIndex(np.arange(0, a.users * a.seen + 1, a.seen), seen_idx.reshape(-1))
    users = UserTable(
        np.arange(a.users).astype(str).astype(object),
        np.arange(a.users),
        np.zeros(a.users, np.int64),
        np.zeros((a.users, 1), np.int64),
        np.ones(a.users, np.int64),
    )
    sample = np.sort(rng.choice(a.users, size=min(a.sample, a.users), replace=False))
    truth = _truth(uv, iv, available, seen_idx, sample, a.k)
    towers = RandomTowers(uv, iv)
    engines = [("auto", {}), *([("float32", {})] if a.fp32 else [])]
    if a.ann:
        engines += [("ivf", {"ivf_probe": p}) for p in (8, 32)]
    rows = []
    for name, extra in engines:
        dtype = name if name in ("auto", "float32") else "auto"
        cfg = ScoringConfig(a.k, a.k, 0.0, None, dtype, "ivf" if name == "ivf" else "exact", **extra)
        t0 = time.perf_counter()
        scorer = Scorer(towers, None, items, cfg)
        build = time.perf_counter() - t0
        seconds, found = _run_scorer(scorer, users, seen, a.users, a.chunk, sample)
        if name == "ivf":
            label = f"nightrec Scorer, FAISS IndexIVFFlat ({scorer.index.index.nlist} lists, nprobe {extra['ivf_probe']})"
        elif name == "float32":
            label = "nightrec Scorer, exact (fp32 forced)"
        else:
            bf16 = getattr(scorer.index, "dtype", None) == torch.bfloat16
            how = (
                "bf16, compiled selection, fp32 rescoring" if scorer.index.fused else "bf16 + fp32 rescoring"
            )
            label = f"nightrec Scorer, exact ({how if bf16 else 'fp32'})"
        rows.append(
            (
                label,
                seconds,
                _recall(found, truth),
                f"excludes {a.seen} seen + unavailable; index built in {build:.1f} s",
            )
        )
        print(rows[-1], flush=True)
    rss_ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if not a.skip_faiss:
        import faiss

        index = faiss.IndexFlatIP(a.dim)
        index.add(iv)
        found = np.zeros((len(sample), a.k), dtype=np.int64)
        t0 = time.perf_counter()
        for start in range(0, a.users, a.chunk):
            _, idx = index.search(uv[start : start + a.chunk], a.k)
            hit = (sample >= start) & (sample < start + a.chunk)
            found[hit] = idx[sample[hit] - start]
        theirs = time.perf_counter() - t0
        rows.append(
            (
                f"faiss-cpu {faiss.__version__} IndexFlatIP.search",
                theirs,
                _recall(found, truth),
                "no exclusions: recall counts seen/unavailable items it returns as misses",
            )
        )
    lines = [
        f"## Exact top-{a.k} retrieval: {a.users:,} users x {a.items:,} items, d={a.dim} "
        f"({platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__})",
        "",
        "| engine | seconds | users/s | recall@k vs exact fp32 | notes |",
        "| --- | ---: | ---: | ---: | --- |",
        *(
            f"| {lbl} | {sec:.1f} | {a.users / sec:,.0f} | {rec:.4f} | {note} |"
            for lbl, sec, rec, note in rows
        ),
    ]
    if not a.skip_faiss:
        lines += [
            "",
            f"Ratio (our exact path / FAISS IndexFlatIP, users/s): {rows[-1][1] / rows[0][1]:.2f}x.",
        ]
    lines += [
        "",
        f"Peak RSS of our paths: {rss_ours:.1f} GiB. Recall checked on {len(sample):,} sampled users. "
        f"Load average at the end: {os.getloadavg()[0]:.2f} (other work on the machine slows every engine).",
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
