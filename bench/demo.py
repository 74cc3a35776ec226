"""Times the README's `make demo` path: the whole nightly pipeline on the demo data, twice, in a fresh home.

Usage: .venv/bin/python bench/demo.py [--home /tmp/nightrec-bench] [--runs 2]
Prints per-stage seconds, the held-out metrics against popularity and the promotion decision of each night,
and writes them as Markdown to bench/results/demo.md (copied into bench/RESULTS.md by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_night(home: Path) -> tuple[float, dict]:
    env = {**os.environ, "NIGHTREC_HOME": str(home)}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nightrec.cli", "run", "--demo"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"demo run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, json.loads((home / "last_run.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", type=Path, default=Path("/tmp/nightrec-bench-demo"))
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    shutil.rmtree(args.home, ignore_errors=True)
    # Generating the demo data is part of the first `make demo`, but not of a night: time it apart.
    from nightrec.cli import DEMO
    from nightrec.data import synthetic

    t0 = time.perf_counter()
    gen = synthetic.generate(
        DEMO["users"],
        DEMO["items"],
        DEMO["days"],
        args.home / "demo-data",
        events_per_user=DEMO["events_per_user"],
    )
    gen_s = time.perf_counter() - t0
    lines = [
        f"## Demo pipeline (`bench/demo.py`, {platform.machine()}, {os.cpu_count()} CPUs, no GPU)",
        "",
        f"Data: {gen.n_users} users, {gen.n_items} items, {gen.n_events} events over {DEMO['days']} days "
        f"(generated in {gen_s:.1f} s).",
        "",
    ]
    for night in range(1, args.runs + 1):
        wall, last = run_night(args.home)
        promo = last.get("evaluate_and_promote") or {}
        m = promo.get("metrics", {})
        stage_s = ", ".join(f"{k} {v:.1f}" for k, v in last["seconds"].items())
        lines += [
            f"### Night {night}: {wall:.0f} s wall (process start to exit), stages {sum(last['seconds'].values()):.0f} s",
            "",
            f"Stage seconds: {stage_s}.",
            "",
            "| lists | NDCG@10 | Recall@10 | NDCG@20 | Recall@20 | MRR | coverage |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name, v in m.items():
            lines.append(
                f"| {name} | {v['ndcg_at_10']:.4f} | {v['recall_at_10']:.4f} | {v['ndcg_at_20']:.4f} | "
                f"{v['recall_at_20']:.4f} | {v['mrr']:.4f} | {v['coverage']:.4f} |"
            )
        pub = last.get("publish") or {}
        lines += [
            "",
            f"Live policy: {(promo.get('policy') or {}).get('name')}. Learned models over the best baseline "
            f"({promo.get('best_baseline')}, NDCG@10): {promo.get('lift_over_best_baseline') or 0:+.1%}. "
            f"Promotion: {promo.get('reason')}. Published generation {pub.get('generation')}, "
            f"counts {pub.get('counts')}.",
            "",
        ]
        print(f"night {night}: {wall:.0f} s, {promo.get('reason')}", flush=True)
    out = ROOT / "bench" / "results" / "demo.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
