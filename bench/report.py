"""The night report's cost at scale: list figures and churn for N users x K against a live snapshot, then the page.

Usage: .venv/bin/python bench/report.py [--users 1000000] [--items 100000] [--top-k 20] [--parts 16]
       [--work /tmp/nightrec-bench-report] [--reuse] [--out bench/results/report.md]

Tonight's lists and last night's (Zipf(0.8) items; every user's list changes in part) are generated; last
night's are published as a snapshot to a local object store with the publish stage's own writer, tonight's
are written as Parquet as precompute leaves them in the lake (``--reuse`` keeps both from an earlier run of the
same size). Then the recs gate's own functions run, from reading tonight's Parquet on: `validation.list_figures.against_snapshot` (tonight's figures, the live snapshot's
figures, per-user Jaccard@K and RBO, one part in memory at a time) and `evaluation.night_report.render`.
Reported: seconds of each, the share of the precompute stage's 147 s at 1M users (`bench/results/
precompute_stage.md`, the goal is at most 10%), and the peak RSS of the process.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.evaluation.night_report import NightReport, render
from nightrec.io.store import open_store
from nightrec.publish import snapshot
from nightrec.validation.list_figures import against_snapshot, read_lists

PRECOMPUTE_1M_S = 147.0  # bench/results/precompute_stage.md, 1M users x 100K items
DS = date(2026, 11, 22)


def _lists(
    rng, n_users: int, n_items: int, k: int, p: np.ndarray, keep: np.ndarray | None
) -> tuple[pd.DataFrame, np.ndarray]:
    """K distinct items per user drawn by popularity; with ``keep``, a share of the previous lists is kept."""
    draws = rng.choice(n_items, size=(n_users, 2 * k), p=p)
    if keep is not None:
        draws[:, :k] = np.where(rng.random((n_users, k)) < 0.5, keep, draws[:, :k])
    # First K distinct items of each row (rows with fewer are rare at 2K draws; they keep what they have).
    order = np.argsort(draws, axis=1, kind="stable")
    sorted_ = np.take_along_axis(draws, order, axis=1)
    dup = np.zeros_like(draws, dtype=bool)
    dup[:, 1:] = sorted_[:, 1:] == sorted_[:, :-1]
    first = np.empty_like(dup)
    np.put_along_axis(first, order, ~dup, axis=1)
    items = np.where(first, draws, -1)
    lists = np.full((n_users, k), -1)
    for u in range(n_users):  # a few seconds at 1M; the generation is not what is timed
        row = items[u][items[u] >= 0][:k]
        lists[u, : len(row)] = row
    users = np.repeat(np.arange(n_users), k)
    ranks = np.tile(np.arange(1, k + 1), n_users)
    flat = lists.ravel()
    ok = flat >= 0
    return pd.DataFrame(
        {
            "user_id": pd.array([f"u{u:07d}" for u in users[ok]], dtype=object),
            "rank": ranks[ok].astype(np.int32),
            "item_id": pd.array([f"i{i:06d}" for i in flat[ok]], dtype=object),
            "score": np.ones(ok.sum()),
            "source": "model",
        }
    ), lists


def _peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _setup(args, rng, p: np.ndarray, store, tonight: Path) -> None:
    live, live_codes = _lists(rng, args.users, args.items, args.top_k, p, None)
    new, _ = _lists(rng, args.users, args.items, args.top_k, p, live_codes)
    del live_codes
    recs_dir = args.work / "live-recs"
    recs_dir.mkdir()
    pq.write_table(pa.Table.from_pandas(live, preserve_index=False), recs_dir / "part-0.parquet")
    del live
    tonight.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(new, preserve_index=False), tonight)
    del new
    snapshot.write_snapshot(
        recs_dir, store, ds=DS, run_id="bench", shard_count=args.parts, meta={"top_k": args.top_k}
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--parts", type=int, default=16)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nightrec-bench-report")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "report.md")
    ap.add_argument("--reuse", action="store_true", help="keep the generated lists of an earlier run")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, args.items + 1) ** 0.8
    p = weights / weights.sum()
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:06d}" for i in range(args.items)],
            "popularity": np.round(p * 50 * args.users),
            "category": rng.integers(0, 50, args.items),
        }
    )

    t0 = time.perf_counter()
    shape = f"{args.users}-{args.items}-{args.top_k}-{args.parts}"
    store = open_store(f"file://{args.work / 'store'}")
    tonight = args.work / "lake-recs" / "part-0.parquet"
    reused = args.reuse and (args.work / "shape").exists() and (args.work / "shape").read_text() == shape
    if not reused:
        shutil.rmtree(args.work, ignore_errors=True)
        args.work.mkdir(parents=True)
        _setup(args, rng, p, store, tonight)
        (args.work / "shape").write_text(shape)
    manifest = snapshot.load_manifest(store, snapshot.manifest_key(DS, "bench"))
    setup_s = time.perf_counter() - t0

    load_before = os.getloadavg()[0]
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on: the timed part, not the setup
    t0 = time.perf_counter()
    new_table = read_lists(tonight.parent)  # as the recs gate reads the lake
    lists = against_snapshot(
        items, args.top_k, new_table, store, manifest, snapshot.manifest_key(DS, "bench")
    )
    figures = lists.new.metrics()
    live_figures = lists.live.metrics()
    figures_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    page = render(NightReport(DS, "learned", lists))
    render_s = time.perf_counter() - t0
    peak_gib = _peak_rss_kib() / 2**20
    total = figures_s + render_s
    scale = args.users / 1_000_000

    lines = [
        f"## Night report: {args.users:,} users x K={args.top_k}, {args.items:,} items "
        f"({platform.machine()}, {os.cpu_count()} CPUs)",
        "",
        "`bench/report.py`: tonight's lists against a live snapshot of "
        f"{args.parts} parts in a local object store, through the recs gate's own functions "
        "(`validation.list_figures.against_snapshot`, then `evaluation.night_report.render`).",
        "",
        "| step | seconds |",
        "| --- | ---: |",
        f"| figures: tonight, live, per-user Jaccard@K and RBO | {figures_s:.1f} |",
        f"| HTML page with 4 charts ({len(page) / 2**10:.0f} KiB) | {render_s:.1f} |",
        f"| **report in all** | **{total:.1f}** |",
        "",
        f"Against the precompute stage at 1M users ({PRECOMPUTE_1M_S:.0f} s, scaled to {scale:g}M users): "
        f"**{total / (PRECOMPUTE_1M_S * scale):.1%}** (goal: at most 10%). Peak RSS of the timed part "
        f"{peak_gib:.2f} GiB (tonight's lists as one Arrow table of dictionaries, as the recs gate reads them, "
        "two users x K code matrices, one live part).",
        "",
        f"Tonight: coverage {figures['coverage']:.3f}, Gini {figures['gini']:.3f}, personalisation "
        f"{figures['personalisation']:.4f}, mean Jaccard@K {figures['jaccard_mean']:.3f}, replaced "
        f"{figures['replaced_share']:.1%}; live: coverage {live_figures['coverage']:.3f}, Gini "
        f"{live_figures['gini']:.3f}. Setup (generation, snapshot write) {setup_s:.0f} s{' (reused)' if reused else ''}, not timed above.",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load average {load_before:.2f} before.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
