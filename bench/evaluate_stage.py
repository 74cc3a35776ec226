"""The promotion gate's measurements on a night's home: every candidate's held-out lists, timed.

Usage: NIGHTREC_HOME=<a home a night ran in> .venv/bin/python bench/evaluate_stage.py --tier M --ds 2026-11-22
       [--label after] [--out bench/results/evaluate_stage.md]
       .venv/bin/python bench/evaluate_stage.py --table   (rebuild the table from the saved runs)

Runs what `evaluate_and_promote` spends its time on (loading the evaluation users, then
`promotion.measure_candidates`: the learned pair with and without its ranker, each popularity window, EASE with
its L2 and recency weight tuned on the validation window) for the challenger the registry holds, and records
the wall time and each candidate's NDCG@10. Nothing is promoted or logged. Run it on two checkouts against the
same home (PYTHONPATH=<checkout>) to compare code on identical inputs: the NDCG column must match.

A tier's `bench/night_scale.py` run leaves the home (/tmp/nightrec-scale-<tier>).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nightrec import registry  # noqa: E402
from nightrec.evaluation import offline, promotion  # noqa: E402
from nightrec.scoring.policies import Policy  # noqa: E402
from nightrec.settings import Settings  # noqa: E402
from schemas.results import CHALLENGER, RANKING, RETRIEVAL  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def measure(ds: date) -> dict:
    settings = Settings()
    registry.connect(settings)
    r = registry.get_alias_version(RETRIEVAL, CHALLENGER)
    k = registry.get_alias_version(RANKING, CHALLENGER)
    challenger = Policy.learned(r, k, registry.serving_version(RETRIEVAL, r)) if r and k else None
    t0 = time.perf_counter()
    data = offline.load_eval_data(settings, ds)
    t1 = time.perf_counter()
    measured, _, _, _ = promotion.measure_candidates(settings, ds, challenger, None, data)
    t2 = time.perf_counter()
    return {
        "users": len(data.users),
        "items": len(data.items),
        "load_s": round(t1 - t0, 1),
        "measure_s": round(t2 - t1, 1),
        "ndcg_at_10": {c: round(m.metrics["ndcg_at_10"], 5) for c, m in measured.items()},
    }


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        return out.stdout.strip() or "?"
    except OSError:
        return "?"


def write_table(path: Path) -> str:
    runs = [json.loads(p.read_text()) for p in RESULTS.glob("evaluate_stage_*.json")]
    runs.sort(key=lambda r: (r["tier"], r["label"] != "before", r["measured"]))
    lines = [
        "## The promotion gate's measurements (`bench/evaluate_stage.py`)",
        "",
        "Loading the evaluation users and measuring every candidate (learned pair with and without its ranker, "
        "three popularity windows, EASE tuned on the validation window) on a night's home; the same home for "
        "each code version, so the lists, and the NDCG@10 column, must be identical.",
        "",
        "| tier | code | eval users | items | load s | measure s | NDCG@10 per candidate | measured |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in runs:
        ndcg = ", ".join(f"{c} {v:.4f}" for c, v in r["ndcg_at_10"].items())
        lines.append(
            f"| {r['tier']} | {r['label']} (`{r['commit']}`) | {r['users']:,} | {r['items']:,} | {r['load_s']} | "
            f"{r['measure_s']} | {ndcg} | {r['measured']}, {r['machine']} |"
        )
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tier")
    ap.add_argument("--ds", type=date.fromisoformat)
    ap.add_argument("--label", default="current")
    ap.add_argument("--commit", default=None, help="the code's commit (default: git HEAD of this checkout)")
    ap.add_argument("--out", type=Path, default=RESULTS / "evaluate_stage.md")
    ap.add_argument("--table", action="store_true", help="only rebuild the table from the saved runs")
    args = ap.parse_args()
    if args.table or not (args.tier and args.ds):
        print(write_table(args.out))
        return
    result = measure(args.ds) | {
        "tier": args.tier,
        "ds": args.ds.isoformat(),
        "label": args.label,
        "commit": args.commit or _commit(),
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {psutil.cpu_count()} CPUs, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
    }
    print(json.dumps(result, indent=2))
    (RESULTS / f"evaluate_stage_{args.tier}_{args.label}.json").write_text(
        json.dumps(result, indent=2) + "\n"
    )
    print(write_table(args.out))


if __name__ == "__main__":
    main()
