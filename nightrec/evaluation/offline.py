"""Offline evaluation of full lists on the held-out window (the lists come from the production scorer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from nightrec.evaluation import ease, metrics
from nightrec.features.events import Cutoffs
from nightrec.scoring import inputs
from nightrec.scoring.score import Scorer, ScoringConfig
from nightrec.settings import Settings


@dataclass
class EvalData:
    users: inputs.UserTable
    items: inputs.ItemTable
    seen: inputs.SeenIndex
    rel_rows: np.ndarray
    rel_items: np.ndarray
    n_relevant: np.ndarray
    before: pd.DataFrame | None = None  # every user's seen (user_id, item_id, weight) before the holdout


def load_eval_data(settings: Settings, ds: date) -> EvalData:
    """Users as of the holdout start, restricted to those who engage with unseen items in the holdout."""
    cfg = settings.features
    cut = Cutoffs.for_run(ds, cfg)
    users = inputs.load_users(settings.lake, ds, "eval", cfg.history_len)
    items = inputs.load_items(settings.lake, ds, "eval")
    seen_pairs = inputs.load_interactions(settings.lake, ds, None, cut.eval_start, cfg)
    future = inputs.load_interactions(settings.lake, ds, cut.eval_start, ds, cfg)
    future = future[future["weight"] > 0]
    seen_all = inputs.build_seen(seen_pairs, users, items)
    truth = inputs.build_seen(future, users, items)
    # Relevant = engaged in the holdout and not seen before it (seen items can never be recommended).
    t_rows = np.repeat(np.arange(len(users)), np.diff(truth.indptr))
    codes = t_rows.astype(np.int64) * len(items) + truth.indices
    s_rows = np.repeat(np.arange(len(users)), np.diff(seen_all.indptr))
    fresh = ~np.isin(codes, s_rows.astype(np.int64) * len(items) + seen_all.indices)
    n_rel = np.bincount(t_rows[fresh], minlength=len(users))
    keep = np.flatnonzero(n_rel > 0)
    remap = np.full(len(users), -1)
    remap[keep] = np.arange(len(keep))
    sub_users = users.take(keep)
    seen_sub = inputs.build_seen(seen_pairs, sub_users, items)
    return EvalData(
        sub_users, items, seen_sub, remap[t_rows[fresh]], truth.indices[fresh], n_rel[keep], seen_pairs
    )


def score_lists(scorer: Scorer, data: EvalData, chunk: int) -> np.ndarray:
    out = []
    for start in range(0, len(data.users), chunk):
        part = data.users.take(slice(start, start + chunk))
        out.append(scorer.score(part, data.seen, start).items)
    return np.concatenate(out) if out else np.zeros((0, scorer.cfg.top_k), dtype=np.int64)


def popularity_lists(data: EvalData, k: int) -> np.ndarray:
    """The popularity baseline: most popular available items before the holdout, minus what each user saw."""
    items = data.items
    order = np.lexsort((items.item_id, -items.popularity))
    order = order[items.available[order]]
    lists = np.full((len(data.users), k), -1, dtype=np.int64)
    for u in range(len(data.users)):
        s = data.seen.indices[data.seen.indptr[u] : data.seen.indptr[u + 1]]
        cand = order[: k + len(s)]
        cand = cand[~np.isin(cand, s)][:k]
        lists[u, : len(cand)] = cand
    return lists


def ease_lists(data: EvalData, k: int, l2: float) -> np.ndarray:
    """The EASE baseline's lists, fit on every user's engagement before the holdout (as the models are).

    Raises:
        ease.CatalogTooLarge: the catalog exceeds ``ease.MAX_ITEMS``.
    """
    if data.before is None:
        raise ValueError("EvalData without the pre-holdout interactions: build it with load_eval_data")
    engaged = data.before[data.before["weight"] > 0]
    cols = inputs.positions(engaged["item_id"].to_numpy(dtype=object), data.items.item_id)
    users, keep = pd.factorize(engaged["user_id"])[0], cols >= 0
    weights = ease.fit(users[keep], cols[keep], int(users.max(initial=-1)) + 1, len(data.items), l2)
    rows = np.repeat(np.arange(len(data.users)), np.diff(data.seen.indptr))
    return ease.recommend(weights, rows, data.seen.indices, len(data.users), k, data.items.available)


def evaluate(lists: np.ndarray, data: EvalData, ks: list[int]) -> dict[str, float]:
    hits = metrics.hits_matrix(lists, data.rel_rows, data.rel_items, len(data.items))
    out = metrics.list_metrics(hits, data.n_relevant, ks)
    out["coverage"] = metrics.coverage(lists, len(data.items))
    pop = data.items.popularity
    valid = lists[lists >= 0]
    out["mean_popularity_percentile"] = (
        float((np.argsort(np.argsort(pop))[valid] / max(len(pop) - 1, 1)).mean()) if len(valid) else 0.0
    )
    return out


def evaluate_models(settings: Settings, ds: date, data: EvalData, retrieval, ranking) -> dict[str, float]:
    ks = settings.promotion.k_eval
    sc = settings.scoring
    cfg = ScoringConfig.from_settings(sc, top_k=max(ks))
    scorer = Scorer(retrieval, ranking, data.items, cfg)
    return evaluate(score_lists(scorer, data, sc.user_chunk_size), data, ks)
