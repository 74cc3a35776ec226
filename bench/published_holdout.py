"""The held-out quality of the lists a night PUBLISHED, on the day after it, against recent popularity.

Usage: .venv/bin/python bench/published_holdout.py --home /tmp/nightrec-scale-L --published 2026-11-22 \
           --next 2026-11-23 [--tier L]

The promotion gate measures the evaluated pair on the night's own holdout; the lists that go live are made by
its serving twin (refit on every window, the holdout included), which that holdout cannot measure. Here night
``--published``'s snapshot is read from the home's store and measured on the engagement of the days
[published, next), which the night never saw, taken from night ``--next``'s lake (cleaned and weighted by the
pipeline itself):

- truth: a user's engaged items in those days that they had not seen before ``--published`` (what the gate
  calls relevant); evaluated users are those with at least one, a seeded sample of
  ``promotion.max_eval_users`` of them where there are more (the gate's sample size and seed);
- the reference: each of ``promotion.popularity_windows``' popularity baselines, refit on night
  ``--published``'s lake before its run date and scored by the production scorer (the same seen and
  unavailable filtering, rules and fallback as the gate's baselines);
- NDCG@10 and Recall@20 per user; the published lists against each baseline by a paired bootstrap.

``--tier`` also writes the figures into ``bench/results/night_scale_<tier>.json`` (``published_holdout``).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nightrec.evaluation import offline, paired  # noqa: E402
from nightrec.evaluation.offline import EvalData  # noqa: E402
from nightrec.io.store import ObjectStore, open_store  # noqa: E402
from nightrec.publish import snapshot  # noqa: E402
from nightrec.scoring import baselines, inputs  # noqa: E402
from nightrec.scoring.policies import Policy  # noqa: E402
from nightrec.settings import Settings  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def next_day_truth(s: Settings, published: date, nxt: date) -> EvalData:
    """Night ``published``'s users and items, with the engagement of [published, nxt) on items they had not
    seen before ``published`` as the relevant pairs (the gate's rule, ``offline.eval_data``)."""
    cfg = s.features
    users = inputs.load_users(s.lake, published, "serve", cfg.history_len)
    items = inputs.load_items(s.lake, published, "serve")
    seen_pairs = inputs.load_interactions(s.lake, published, None, published, cfg, arrow=True)
    future = inputs.load_interactions(s.lake, nxt, published, nxt, cfg, arrow=True)
    return offline.eval_data(s, users, items, seen_pairs, future)


def published_lists(store: ObjectStore, published: date, data: EvalData, k: int) -> tuple[np.ndarray, str]:
    """The snapshot night ``published`` made live, as item positions [users, k] (-1 where a list is short or
    a user is missing), and its policy's name."""
    keys = snapshot.list_manifests(store, snapshot.ds_prefix(published))
    if len(keys) != 1:
        raise SystemExit(f"expected one published snapshot for {published} in {store.url}, found {len(keys)}")
    manifest = snapshot.load_manifest(store, keys[0])
    lists = np.full((len(data.users), k), -1, dtype=np.int64)
    for part in manifest.parts:
        t = pq.read_table(io.BytesIO(store.get_bytes(part.key)), columns=["user_id", "rank", "item_id"])
        t = t.filter(pc.less_equal(t["rank"], k))
        row = inputs.positions(t["user_id"], data.users.user_id)
        col = inputs.positions(t["item_id"], data.items.item_id)
        rank = t["rank"].to_numpy() - 1
        ok = row >= 0
        lists[row[ok], rank[ok]] = col[ok]
    return lists, manifest.policy["name"]


def measure(home: Path, published: date, nxt: date) -> dict:
    s = Settings(home=home)
    t0 = time.perf_counter()
    data = next_day_truth(s, published, nxt)
    ks = s.promotion.k_eval
    lists, policy = published_lists(open_store(s.store), published, data, max(ks))
    live = offline.measure_lists(lists, data, ks)
    out = {
        "published": published.isoformat(),
        "next": nxt.isoformat(),
        "policy": policy,
        "users": len(data.users),
        "relevant_pairs": len(data.rel_items),
        "users_missing": int((lists[:, 0] < 0).sum()),
        "published_lists": {m: round(live.metrics[m], 4) for m in ("ndcg_at_10", "recall_at_20", "coverage")},
        "baselines": {},
    }
    for w in s.promotion.popularity_windows:
        policy = Policy("popularity", {"window_days": w})
        # Refit on what night ``published`` knew, scored like the gate scores its baselines.
        model = baselines.build(policy, s, published, published, data.users, data.items)
        base = offline.measure(s, published, data, model, None)
        c = paired.paired_bootstrap(live.per_user["ndcg_at_10"], base.per_user["ndcg_at_10"])
        out["baselines"][policy.name] = {
            "ndcg_at_10": round(base.metrics["ndcg_at_10"], 4),
            "recall_at_20": round(base.metrics["recall_at_20"], 4),
            "published_over": round(live.metrics["ndcg_at_10"] / base.metrics["ndcg_at_10"], 2)
            if base.metrics["ndcg_at_10"]
            else None,
            "diff_ci": [round(c.diff, 4), round(c.low, 4), round(c.high, 4)],
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def describe(r: dict) -> str:
    p = r["published_lists"]
    lines = [
        f"night {r['published']}'s published lists ({r['policy']}) on the day(s) [{r['published']}, {r['next']}): "
        f"{r['users']:,} users with {r['relevant_pairs']:,} relevant pairs ({r['users_missing']} missing from the "
        f"snapshot): NDCG@10 {p['ndcg_at_10']:.4f}, Recall@20 {p['recall_at_20']:.4f}"
    ]
    for name, b in r["baselines"].items():
        d, lo, hi = b["diff_ci"]
        lines.append(
            f"  {name}: NDCG@10 {b['ndcg_at_10']:.4f} -> published {b['published_over']}x, "
            f"paired {d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument(
        "--published", type=date.fromisoformat, required=True, help="the night whose lists are measured"
    )
    ap.add_argument(
        "--next", type=date.fromisoformat, required=True, help="a later night whose lake holds the days"
    )
    ap.add_argument("--tier", help="also record the figures in bench/results/night_scale_<tier>.json")
    a = ap.parse_args()
    r = measure(a.home, a.published, a.next)
    print(describe(r))
    if a.tier:
        path = RESULTS / f"night_scale_{a.tier}.json"
        saved = json.loads(path.read_text())
        saved["published_holdout"] = r
        path.write_text(json.dumps(saved, indent=1))


if __name__ == "__main__":
    main()
