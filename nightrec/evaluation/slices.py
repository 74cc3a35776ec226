"""Held-out quality by slice: who the lists serve well and who they fail (RecList's behavioural slices).

The live policy's held-out lists are cut four ways: user activity (events before the holdout), segment, new
against returning users, and, per held-out item, its popularity. Each slice gets NDCG@10 and Recall@10 with a
95% interval (normal approximation over its users, or its held-out items), and each cut the gap between its
best and worst slice of at least ``MIN_SLICE`` users.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from nightrec.evaluation import metrics
from nightrec.evaluation.offline import EvalData

K = 10
Z95 = 1.96
MIN_SLICE = 20
ACTIVITY_BINS = ((1, 4), (5, 19), (20, 99), (100, None))
NEW_USER_EVENTS = 5  # fewer events than this before the holdout: a new user
POPULARITY_BINS = (("head (top 1%)", 0.0, 0.01), ("torso (1-10%)", 0.01, 0.10), ("mid (10-50%)", 0.10, 0.50),
                   ("tail (50-100%)", 0.50, 1.0))  # fmt: skip
TOP_SEGMENTS = 8


class Slice(BaseModel):
    cut: str
    name: str
    n: int  # users (item popularity: held-out items)
    ndcg: float | None  # None for the item cut: NDCG is a list's, not an item's
    ndcg_ci: float | None
    recall: float
    recall_ci: float | None


class SliceReport(BaseModel):
    policy: str
    k: int
    slices: list[Slice]
    gaps: dict[str, float]  # cut -> best minus worst slice (NDCG@K, or Recall@K for the item cut)


def _mean_ci(values: np.ndarray) -> tuple[float, float | None]:
    if len(values) == 0:
        return float("nan"), None
    ci = Z95 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else None
    return float(values.mean()), (float(ci) if ci is not None else None)


def _user_slice(cut: str, name: str, mask: np.ndarray, ndcg: np.ndarray, recall: np.ndarray) -> Slice:
    n, n_ci = _mean_ci(ndcg[mask])
    r, r_ci = _mean_ci(recall[mask])
    return Slice(cut=cut, name=name, n=int(mask.sum()), ndcg=n, ndcg_ci=n_ci, recall=r, recall_ci=r_ci)


def slice_report(lists: np.ndarray, data: EvalData, policy: str, k: int = K) -> SliceReport:
    """The held-out figures of ``lists`` (one row per evaluation user of ``data``) by slice."""
    lists = lists[:, :k]
    hits = metrics.hits_matrix(lists, data.rel_rows, data.rel_items, len(data.items))
    per_user = metrics.per_user(hits, data.n_relevant, [k])
    ndcg, recall = per_user[f"ndcg_at_{k}"], per_user[f"recall_at_{k}"]
    events = data.users.n_events
    out: list[Slice] = []
    for lo, hi in ACTIVITY_BINS:
        mask = (events >= lo) & (events <= hi if hi is not None else True)
        out.append(_user_slice("activity", f"{lo}-{hi}" if hi else f"{lo}+", mask, ndcg, recall))
    segments, counts = np.unique(data.users.segment_idx, return_counts=True)
    for seg in segments[np.argsort(-counts, kind="stable")][:TOP_SEGMENTS]:
        out.append(_user_slice("segment", str(int(seg)), data.users.segment_idx == seg, ndcg, recall))
    new = events < NEW_USER_EVENTS
    out.append(_user_slice("new_vs_returning", f"new (<{NEW_USER_EVENTS} events)", new, ndcg, recall))
    out.append(_user_slice("new_vs_returning", "returning", ~new, ndcg, recall))
    # Per held-out item: was it in its user's top K? Binned by the item's popularity rank.
    n_items = len(data.items)
    listed = np.repeat(np.arange(len(lists)), lists.shape[1]).astype(np.int64) * (n_items + 1) + lists.ravel()
    found = np.isin(
        data.rel_rows.astype(np.int64) * (n_items + 1) + data.rel_items, listed[lists.ravel() >= 0]
    )
    rank = np.empty(n_items)
    rank[np.argsort(-data.items.popularity, kind="stable")] = np.arange(n_items) / max(n_items, 1)
    item_rank = rank[data.rel_items]
    for name, lo, hi in POPULARITY_BINS:
        mask = (item_rank >= lo) & (item_rank < hi)
        r, r_ci = _mean_ci(found[mask].astype(np.float64))
        out.append(Slice(cut="item_popularity", name=name, n=int(mask.sum()), ndcg=None, ndcg_ci=None,
                         recall=r, recall_ci=r_ci))  # fmt: skip
    gaps = {}
    for cut in dict.fromkeys(s.cut for s in out):
        values = [
            s.ndcg if s.ndcg is not None else s.recall for s in out if s.cut == cut and s.n >= MIN_SLICE
        ]
        if len(values) >= 2:
            gaps[cut] = float(max(values) - min(values))
    return SliceReport(policy=policy, k=k, slices=out, gaps=gaps)
