"""Training throughput, side by side in one process on the same generated examples and machine.

1. DeepFM ranking: ours (``nightrec.training.loop.train_ranking``) against DeepCTR-Torch's ``DeepFM`` with
   its own ``fit`` (the way its users train it), same fields, embedding size, MLP, dropout, batch size,
   optimizer and learning rate. Goal: ours >= 3x the samples/s with an AUC no lower.
2. Two-tower retrieval at 200k users, 50k items, batch 4096. Goal: >= 30k samples/s on the 2-core CPU.

DeepCTR-Torch is a benchmark-only dependency: ``.venv/bin/pip install deepctr-torch`` (never in
requirements). Without it the DeepFM comparison is skipped and says so.

Usage: .venv/bin/python bench/train.py [--rows 400000] [--epochs 2] [--out bench/results/train.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nightrec.models.configs import DeepFMConfig, TwoTowerConfig  # noqa: E402
from nightrec.settings import TrainSettings  # noqa: E402
from nightrec.training import loop  # noqa: E402
from nightrec.training.datasets import RankingTensors, RetrievalTensors  # noqa: E402

# The ranker's fields (RANKER_FIELDS order) at a realistic size: users, segments, items, categories, price,
# popularity, retrieval rank and affinity buckets.
FIELD_DIMS = (100_000, 8, 20_000, 50, 11, 32, 32, 12)
EMBED_DIM, HIDDEN, DROPOUT, BATCH, LR = 16, (128, 64), 0.1, 4096, 0.003


def ranking_examples(n: int, seed: int) -> RankingTensors:
    """Labels from a logistic model with main effects and two interactions (segment x category, affinity
    x retrieval rank), so the FM and deep parts have something a linear model cannot get."""
    g = np.random.default_rng(seed)
    fx = np.random.default_rng(0)  # the same ground truth for every split
    weights = [fx.normal(0, 0.5, d) for d in FIELD_DIMS]
    seg_cat = fx.normal(0, 1.0, (FIELD_DIMS[1], FIELD_DIMS[3]))
    zipf = [np.minimum(g.zipf(1.3, n), d) - 1 for d in FIELD_DIMS[:3:2]]
    x = np.stack([g.integers(0, d, n) for d in FIELD_DIMS], axis=1)
    x[:, 0], x[:, 2] = zipf  # long-tailed users and items, as in the logs
    logit = sum(w[x[:, f]] for f, w in enumerate(weights)) + seg_cat[x[:, 1], x[:, 3]]
    logit += 0.15 * (x[:, 7] - 6) * (x[:, 6] < 8) - 1.0
    y = g.random(n) < 1 / (1 + np.exp(-logit))
    return RankingTensors(torch.from_numpy(x.astype(np.int64)), torch.from_numpy(y.astype(np.float32)))


def bench_ours(train: RankingTensors, valid: RankingTensors, epochs: int) -> dict:
    cfg = DeepFMConfig(field_dims=FIELD_DIMS, embed_dim=EMBED_DIM, hidden=HIDDEN, dropout=DROPOUT)
    s = TrainSettings(
        device="cpu", ranking_epochs=epochs, ranking_batch_size=BATCH, ranking_lr=LR, patience=epochs
    )
    r = loop.train_ranking(train, valid, cfg, s)
    last = r.history[-1]
    per_epoch = [h["samples_per_s"] for h in r.history]
    return {
        "samples_per_s": float(np.median(per_epoch)),
        "per_epoch": [round(v) for v in per_epoch],
        "auc": last["auc"],
        "logloss": last["logloss"],
        "sparse": cfg.use_sparse,
    }


def bench_deepctr(train: RankingTensors, valid: RankingTensors, epochs: int) -> dict | str:
    try:
        from deepctr_torch.inputs import SparseFeat
        from deepctr_torch.models import DeepFM as CtrDeepFM
    except Exception as err:  # noqa: BLE001 - any import failure means "not comparable here", reported
        return f"DeepCTR-Torch could not be imported: {type(err).__name__}: {err}"
    names = [f"f{i}" for i in range(len(FIELD_DIMS))]
    cols = [
        SparseFeat(n, vocabulary_size=d, embedding_dim=EMBED_DIM)
        for n, d in zip(names, FIELD_DIMS, strict=True)
    ]
    torch.manual_seed(7)
    model = CtrDeepFM(cols, cols, dnn_hidden_units=HIDDEN, dnn_dropout=DROPOUT, task="binary", device="cpu")
    model.compile(torch.optim.Adam(model.parameters(), lr=LR), "binary_crossentropy")

    def feed(t: RankingTensors) -> dict:
        return {n: t.x[:, i].numpy() for i, n in enumerate(names)}

    x_tr, y_tr = feed(train), train.label.numpy()
    per_epoch = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.fit(x_tr, y_tr, batch_size=BATCH, epochs=1, verbose=0, shuffle=True)
        per_epoch.append(len(train) / (time.perf_counter() - start))
    p = model.predict(feed(valid), batch_size=8192).reshape(-1)
    p64 = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    y = valid.label.numpy()
    return {
        "samples_per_s": float(np.median(per_epoch)),
        "per_epoch": [round(v) for v in per_epoch],
        "auc": loop.roc_auc(y, p64),
        "logloss": float(-(y * np.log(p64) + (1 - y) * np.log(1 - p64)).mean()),
    }


def retrieval_examples(n: int, n_users: int, n_items: int, n_cats: int, hist: int, seed: int):
    g = np.random.default_rng(seed)

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))

    items = np.minimum(g.zipf(1.2, n), n_items - 1)
    history = np.minimum(g.zipf(1.2, (n, hist)), n_items - 1)
    history[g.random((n, hist)) < 0.3] = 0
    return RetrievalTensors(
        t(g.integers(1, n_users, n)),
        t(g.integers(1, 8, n)),
        t(history),
        t(items),
        t(items % (n_cats - 1) + 1),
        torch.ones(n),
    )


def bench_two_tower(rows: int, epochs: int) -> dict:
    n_users, n_items, n_cats, hist = 200_000, 50_000, 100, 20
    cfg = TwoTowerConfig(
        n_users=n_users, n_items=n_items, n_categories=n_cats, n_segments=8, dim=64, history_len=hist
    )
    train = retrieval_examples(rows, n_users, n_items, n_cats, hist, 0)
    valid = retrieval_examples(2000, n_users, n_items, n_cats, hist, 1)
    s = TrainSettings(
        device="cpu", retrieval_epochs=epochs, retrieval_batch_size=4096, retrieval_lr=0.01, patience=epochs
    )
    r = loop.train_retrieval(train, valid, cfg, s)
    # The loss runs over a batch's distinct items: report how many there are, since that sets its cost.
    batches = train.item_idx[: 4096 * 10].split(4096)
    distinct = sum(len(torch.unique(b)) for b in batches) / len(batches)
    return {
        "distinct_items_per_batch": round(distinct),
        "samples_per_s": float(np.median([h["samples_per_s"] for h in r.history])),
        "per_epoch": [round(h["samples_per_s"]) for h in r.history],
        "sparse": cfg.use_sparse,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=400_000, help="training examples per model")
    ap.add_argument("--epochs", type=int, default=3, help="samples/s is the median epoch's (load spikes)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train.md")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    train, valid = ranking_examples(args.rows, 1), ranking_examples(args.rows // 4, 2)
    ours = bench_ours(train, valid, args.epochs)
    print("ours", ours, flush=True)
    theirs = bench_deepctr(train, valid, args.epochs)
    print("deepctr", theirs, flush=True)
    tt = bench_two_tower(args.rows, args.epochs)
    print("two-tower", tt, flush=True)
    load_after = os.getloadavg()
    write_report(args, ours, theirs, tt, load_before, load_after, time.perf_counter() - t0)


def write_report(args, ours, theirs, tt, load_before, load_after, seconds) -> None:
    def load(la) -> str:
        return " / ".join(f"{v:.2f}" for v in la)

    try:
        from importlib.metadata import version

        ctr_version = version("deepctr-torch")
    except Exception:  # noqa: BLE001
        ctr_version = "not installed"
    lines = [
        f"## Training throughput (`bench/train.py`, {platform.machine()}, {os.cpu_count()} CPUs, no GPU)",
        "",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, deepctr-torch {ctr_version}; "
        f"{args.rows:,} training examples per model, {args.epochs} epochs, fp32; whole bench {seconds:.0f} s. "
        "Samples/s count training steps only (not validation); the headline is the median epoch's, since "
        "other processes on the 2 cores make single epochs swing several-fold.",
        f"Load average (1/5/15 min) at start {load(load_before)}, at end {load(load_after)} "
        "(other processes share the 2 cores; samples/s drops with load).",
        "",
        f"### DeepFM ranking: {len(FIELD_DIMS)} fields ({sum(FIELD_DIMS):,} rows), embed {EMBED_DIM}, "
        f"MLP {HIDDEN}, dropout {DROPOUT}, batch {BATCH}, Adam lr {LR}",
        "",
        "| model | train samples/s (median epoch) | per epoch | valid AUC | valid logloss |",
        "|---|---|---|---|---|",
        f"| nightrec DeepFM (sparse tables + SparseAdam: {ours['sparse']}) | {ours['samples_per_s']:,.0f} | "
        f"{ours['per_epoch']} | {ours['auc']:.4f} | {ours['logloss']:.4f} |",
    ]
    if isinstance(theirs, dict):
        ratio = ours["samples_per_s"] / theirs["samples_per_s"]
        lines += [
            f"| DeepCTR-Torch DeepFM (its `fit`) | {theirs['samples_per_s']:,.0f} | {theirs['per_epoch']} | "
            f"{theirs['auc']:.4f} | {theirs['logloss']:.4f} |",
            "",
            f"Speed-up {ratio:.1f}x (goal >= 3x): {'met' if ratio >= 3 else 'NOT met'}; AUC difference "
            f"{ours['auc'] - theirs['auc']:+.4f} (goal >= 0): {'met' if ours['auc'] >= theirs['auc'] else 'NOT met'}.",
        ]
    else:
        lines += ["", f"No DeepCTR-Torch comparison: {theirs}"]
    goal = "met" if tt["samples_per_s"] >= 30_000 else "NOT met"
    lines += [
        "",
        "### Two-tower retrieval: 200k users, 50k items, history 20, dim 64, batch 4096, in-batch softmax + logQ",
        "",
        f"{tt['samples_per_s']:,.0f} samples/s, median epoch (per epoch {tt['per_epoch']}; sparse id tables: {tt['sparse']}); "
        f"goal >= 30,000: {goal}. Positives are Zipf(1.2) over the items, as interaction logs are skewed: "
        f"{tt['distinct_items_per_batch']:,} distinct items per batch of 4096 (the loss's width).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
