"""Offline evaluation of full lists on the held-out window (the lists come from the production scorer)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow.compute as pc

from nightrec.evaluation import metrics
from nightrec.features.events import Cutoffs
from nightrec.scoring import baselines, ease, inputs
from nightrec.scoring.policies import Policy
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


def load_eval_data(settings: Settings, ds: date) -> EvalData:
    """Users as of the holdout start, restricted to those who engage with unseen items in the holdout, and to
    a seeded uniform sample of ``promotion.max_eval_users`` of them where there are more."""
    cfg = settings.features
    cut = Cutoffs.of_night(settings.lake, ds, cfg)
    users = inputs.load_users(settings.lake, ds, "eval", cfg.history_len)
    items = inputs.load_items(settings.lake, ds, "eval")
    # Arrow, not pandas: 100M events leave tens of millions of seen pairs, never Python strings.
    seen_pairs = inputs.load_interactions(settings.lake, ds, None, cut.eval_start, cfg, arrow=True)
    future = inputs.load_interactions(settings.lake, ds, cut.eval_start, ds, cfg, arrow=True)
    return eval_data(settings, users, items, seen_pairs, future)


def eval_data(
    settings: Settings, users: inputs.UserTable, items: inputs.ItemTable, seen_pairs, future
) -> EvalData:
    """The evaluation set of ``users``: relevant = engaged in ``future`` (weight > 0) with an item not among
    their ``seen_pairs`` (seen items can never be recommended); users with at least one, a seeded sample of
    ``promotion.max_eval_users`` of them where there are more. Pairs are Arrow tables (user_id, item_id,
    weight) as ``inputs.load_interactions`` returns them."""
    future = future.filter(pc.greater(future["weight"], 0.0))
    seen_all = inputs.build_seen(seen_pairs, users, items)
    truth = inputs.build_seen(future, users, items)
    t_rows = np.repeat(np.arange(len(users)), np.diff(truth.indptr))
    codes = t_rows.astype(np.int64) * len(items) + truth.indices
    s_rows = np.repeat(np.arange(len(users)), np.diff(seen_all.indptr))
    # The seen index's codes come sorted (rows ascending, items ascending within a row).
    fresh = ~metrics.isin_sorted(codes, s_rows.astype(np.int64) * len(items) + seen_all.indices)
    n_rel = np.bincount(t_rows[fresh], minlength=len(users))
    keep = np.flatnonzero(n_rel > 0)
    cap = settings.promotion.max_eval_users
    if cap is not None and len(keep) > cap:
        keep = np.sort(np.random.default_rng(settings.promotion.eval_seed).choice(keep, cap, replace=False))
        sampled = np.zeros(len(users), dtype=bool)
        sampled[keep] = True
        fresh &= sampled[t_rows]
    remap = np.full(len(users), -1)
    remap[keep] = np.arange(len(keep))
    sub_users = users.take(keep)
    seen_sub = inputs.build_seen(seen_pairs, sub_users, items)
    return EvalData(sub_users, items, seen_sub, remap[t_rows[fresh]], truth.indices[fresh], n_rel[keep])


def score_lists(
    scorer: Scorer, data: EvalData, chunk: int, rerank_weights: list[float | None] = (None,)
) -> list[np.ndarray]:
    """The evaluation users' lists, one array per re-rank weight (``Scorer.score_each``)."""
    out: list[list[np.ndarray]] = [[] for _ in rerank_weights]
    for start in range(0, len(data.users), chunk):
        part = data.users.take(slice(start, start + chunk))
        for lists, result in zip(
            out, scorer.score_each(part, data.seen, start, list(rerank_weights)), strict=True
        ):
            lists.append(result.items)
    empty = np.zeros((0, scorer.cfg.top_k), dtype=np.int64)
    return [np.concatenate(lists) if lists else empty for lists in out]


TUNE_USERS = 20_000  # validation users EASE's grid is tuned on (a seeded sample where there are more)


def tune_ease(
    settings: Settings,
    ds: date,
    l2_grid: list[float],
    recency_grid: list[float] = (0.0,),
    recency_days: int = 30,
    k: int = 10,
    max_items: int | None = None,
) -> dict[tuple[float, float], float]:
    """NDCG@k of EASE for each (L2, recency weight) on the validation window (fit on engagement before it).

    The recency weight adds ``weight x`` each item's engagement over the last ``recency_days`` (scaled to
    [0, 1]) to the EASE scores: EASE knows what goes with what, not what is new, and on logs where taste
    follows releases the blend beats both. The holdout never sees the choice: everything is fit before
    ``valid_start`` and scored on the validation window's fresh engagement, for up to ``TUNE_USERS`` of its
    users. A catalog past ``max_items`` is restricted to its ``max_items`` most engaged items before the
    window (what ``baselines.build`` does for the holdout). Returns an empty dict where that window has no
    such users.
    """
    cfg = settings.features
    cut = Cutoffs.of_night(settings.lake, ds, cfg)
    items = inputs.load_items(settings.lake, ds, "eval")
    before = inputs.load_interactions(settings.lake, ds, None, cut.valid_start, cfg, arrow=True)
    window = inputs.load_interactions(settings.lake, ds, cut.valid_start, cut.eval_start, cfg, arrow=True)
    engaged = baselines.engaged_pairs(before)
    users = np.sort(pc.unique(engaged["user_id"]).to_numpy(zero_copy_only=False).astype(object))
    if not len(users):
        return {}

    def pairs(tbl) -> tuple[np.ndarray, np.ndarray]:
        r, c = inputs.positions(tbl["user_id"], users), inputs.positions(tbl["item_id"], items.item_id)
        keep = (r >= 0) & (c >= 0)
        return r[keep], c[keep]

    er, ec = pairs(engaged)
    sr, sc = pairs(before)
    tr, tc = pairs(baselines.engaged_pairs(window))
    n = len(items)
    fresh = ~metrics.isin_sorted(tr.astype(np.int64) * n + tc, np.sort(sr.astype(np.int64) * n + sc))
    tr, tc = tr[fresh], tc[fresh]
    n_rel = np.bincount(tr, minlength=len(users))
    evaluated = np.flatnonzero(n_rel > 0)
    if not len(evaluated):
        return {}
    if len(evaluated) > TUNE_USERS:
        rng = np.random.default_rng(settings.promotion.eval_seed)
        evaluated = np.sort(rng.choice(evaluated, TUNE_USERS, replace=False))
    remap = np.full(len(users), -1)
    remap[evaluated] = np.arange(len(evaluated))
    columns = ease.top_columns(ec, n, max_items)
    kept, cols = ease.restrict(ec, columns, n)
    rows = er[kept]
    mine = remap[rows] >= 0
    sub = columns if columns is not None else np.arange(n)
    recent = baselines.recency_prior(settings, ds, cut.valid_start, recency_days, items)[sub]
    g = ease.gram(rows, cols, len(users), len(sub))
    in_window = remap[tr] >= 0
    out = {}
    for l2 in l2_grid:
        weights = ease.weights_from_gram(g, l2)
        biases = [w * recent for w in recency_grid]
        each = ease.recommend_each(
            weights, remap[rows[mine]], cols[mine], len(evaluated), k, biases, items.available[sub]
        )
        for w, lists in zip(recency_grid, each, strict=True):
            lists = np.where(lists >= 0, sub[np.maximum(lists, 0)], -1)
            hits = metrics.hits_matrix(lists, remap[tr[in_window]], tc[in_window], n)
            out[(float(l2), float(w))] = metrics.list_metrics(hits, n_rel[evaluated], [k])[f"ndcg_at_{k}"]
    return out


@dataclass
class Measured:
    """A policy's held-out metrics: means (``metrics``) and the per-user values they average (``per_user``)."""

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    lists: np.ndarray | None = None  # the lists measured, one row per evaluation user (for the slices)


def evaluate(lists: np.ndarray, data: EvalData, ks: list[int]) -> dict[str, float]:
    return measure_lists(lists, data, ks).metrics


def measure_lists(lists: np.ndarray, data: EvalData, ks: list[int]) -> Measured:
    hits = metrics.hits_matrix(lists, data.rel_rows, data.rel_items, len(data.items))
    out = metrics.list_metrics(hits, data.n_relevant, ks)
    out["coverage"] = metrics.coverage(lists, len(data.items))
    pop = data.items.popularity
    valid = lists[lists >= 0]
    out["mean_popularity_percentile"] = (
        float((np.argsort(np.argsort(pop))[valid] / max(len(pop) - 1, 1)).mean()) if len(valid) else 0.0
    )
    return Measured(out, metrics.per_user(hits, data.n_relevant, ks), lists)


def measure(settings: Settings, ds: date, data: EvalData, retrieval, ranking) -> Measured:
    """The held-out metrics of the lists the production scorer makes with ``retrieval`` (a two-tower model or a
    baseline) and ``ranking`` (or None), for the evaluation users as of the holdout start."""
    return measure_each(settings, data, retrieval, ranking, [None])[0]


def measure_each(
    settings: Settings, data: EvalData, retrieval, ranking, rerank_weights: list[float | None]
) -> list[Measured]:
    """:func:`measure` once per re-rank weight (None = the scorer's own, 0 = the retrieval order alone), from
    one retrieval pass over the catalog."""
    ks = settings.promotion.k_eval
    sc = settings.scoring
    cfg = ScoringConfig.from_settings(sc, top_k=max(ks))
    scorer = Scorer(retrieval, ranking, data.items, cfg)
    return [
        measure_lists(lists, data, ks)
        for lists in score_lists(scorer, data, sc.user_chunk_size, rerank_weights)
    ]


def evaluate_models(settings: Settings, ds: date, data: EvalData, retrieval, ranking) -> dict[str, float]:
    return measure(settings, ds, data, retrieval, ranking).metrics


def measure_baseline(settings: Settings, ds: date, data: EvalData, policy: Policy) -> Measured:
    """A baseline policy refit on everything before the holdout and scored like the models."""
    model = baselines.build(
        policy,
        settings,
        ds,
        Cutoffs.of_night(settings.lake, ds, settings.features).eval_start,
        data.users,
        data.items,
    )
    return measure(settings, ds, data, model, None)
