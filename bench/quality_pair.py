"""Two runs of ``bench/quality.py`` on the same data, paired: is one set of published lists better?

Usage: .venv/bin/python bench/quality_pair.py WORK_A WORK_B [--dataset ratings] [--cutoffs 4] [--step-days 14]
       [--horizon-days 14]

WORK_A and WORK_B are the ``--work`` folders of two runs that differ in one setting (say
``NIGHTREC_TRAIN__RANKING_POINT_IN_TIME_POPULARITY``). Each night's published lists are scored with the script's
own protocol (warm users, fresh items in the horizon), pooled over the cutoffs, and compared per (user, cutoff)
by the paired bootstrap the promotion gate uses. Prints one line: NDCG@10 of A and B and A - B with its 95% CI.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import quality  # noqa: E402

from nightrec.evaluation.paired import paired_bootstrap  # noqa: E402
from nightrec.settings import Settings  # noqa: E402


def pooled_ndcg(work: Path, name: str, a) -> tuple[np.ndarray, list]:
    raw = work / name / "raw"
    log = quality.load_log(raw, Settings().features)
    cuts = quality.pick_cutoffs(log, a.cutoffs, a.step_days, a.horizon_days)
    values = []
    for d in cuts:
        split = quality.make_split(log, d, d + timedelta(days=a.horizon_days))
        lists, _ = quality.published_lists(
            log, split, split.warm, work / name / "nights" / f"published-{d}.parquet"
        )
        values.append(quality.measure(lists, split.warm, len(log.items))["ndcg_at_10"])
    return np.concatenate(values), cuts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work_a", type=Path)
    ap.add_argument("work_b", type=Path)
    ap.add_argument("--dataset", default="ratings")
    ap.add_argument("--cutoffs", type=int, default=4)
    ap.add_argument("--step-days", type=int, default=14)
    ap.add_argument("--horizon-days", type=int, default=14)
    a = ap.parse_args()
    va, cuts = pooled_ndcg(a.work_a, a.dataset, a)
    vb, _ = pooled_ndcg(a.work_b, a.dataset, a)
    cmp = paired_bootstrap(va, vb, samples=5000)
    print(
        f"{a.dataset}, cutoffs {', '.join(map(str, cuts))}, {len(va)} user-cutoff pairs: NDCG@10 A {va.mean():.4f}, "
        f"B {vb.mean():.4f}, A - B {cmp.diff:+.4f} [{cmp.low:+.4f}, {cmp.high:+.4f}] at 95%"
    )


if __name__ == "__main__":
    main()
