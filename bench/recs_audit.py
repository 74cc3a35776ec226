"""The recommendations gate's audit and the seen index on a night's lake: what the L tier's validate_recs and
precompute spend before any expectation runs.

Usage: .venv/bin/python bench/recs_audit.py --home /tmp/nightrec-scale-L --date 2026-11-23

Times ``inputs.build_seen`` over every engaged (user, item) pair of the lake (39M at the L tier) and the whole
``gates.recs_audit`` (the lists' 20M rows against them), best of ``--repeat`` runs, and prints one line each.
"""

from __future__ import annotations

import argparse
import time
from datetime import date
from pathlib import Path

from nightrec.scoring import inputs
from nightrec.settings import Settings
from nightrec.validation import gates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--date", type=date.fromisoformat, required=True)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    s = Settings(home=args.home)
    users = inputs.load_users(s.lake, args.date, "serve", s.features.history_len)
    items = inputs.load_items(s.lake, args.date, "serve")
    pairs = inputs.load_interactions(s.lake, args.date, None, args.date, s.features, arrow=True)
    best = {"build_seen": float("inf"), "recs_audit": float("inf")}
    for _ in range(args.repeat):
        t = time.perf_counter()
        seen = inputs.build_seen(pairs, users, items)
        best["build_seen"] = min(best["build_seen"], time.perf_counter() - t)
        t = time.perf_counter()
        _, audit, _, _ = gates.recs_audit(s, args.date)
        best["recs_audit"] = min(best["recs_audit"], time.perf_counter() - t)
    print(
        f"{len(users):,} users, {len(items):,} items, {pairs.num_rows:,} pairs, {len(seen.indices):,} distinct"
    )
    for name, sec in best.items():
        print(f"{name}: {sec:.1f} s")
    print(f"audit rows {len(audit):,}, lists' seen items {int(audit['n_seen'].sum()):,}")


if __name__ == "__main__":
    main()
