"""Top-K list metrics, vectorised over users (binary relevance)."""

from __future__ import annotations

import numpy as np


def hits_matrix(
    lists: np.ndarray, relevant_rows: np.ndarray, relevant_items: np.ndarray, n_items: int
) -> np.ndarray:
    """bool [U, K]: is lists[u, r] among user u's relevant items (pairs given as parallel arrays)?"""
    u = np.repeat(np.arange(lists.shape[0]), lists.shape[1])
    codes = u.astype(np.int64) * (n_items + 1) + lists.reshape(-1)
    rel = relevant_rows.astype(np.int64) * (n_items + 1) + relevant_items
    return isin_sorted(codes, np.sort(rel)).reshape(lists.shape) & (lists >= 0)


def isin_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """bool: is each of ``values`` in ``sorted_set`` (ascending)? A binary search per value: ``np.isin`` hashes
    both arrays, which over the tens of millions of seen pairs of a 100M-event log took tens of seconds."""
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[pos] == values


def per_user(hits: np.ndarray, n_relevant: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """Each metric per user (recall, NDCG, HitRate at each k, and MRR), over users with a relevant item.

    The per-user values are what a paired comparison of two lists over the same users needs.
    """
    users = n_relevant > 0
    hits, n_rel = hits[users], n_relevant[users]
    out: dict[str, np.ndarray] = {}
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    for k in ks:
        h = hits[:, :k]
        dcg = (h * discounts[:k]).sum(1)
        ideal = np.cumsum(discounts[:k])[np.minimum(n_rel, k) - 1] if len(n_rel) else np.ones(0)
        out[f"recall_at_{k}"] = h.sum(1) / np.maximum(np.minimum(n_rel, k), 1)
        out[f"ndcg_at_{k}"] = dcg / ideal
        out[f"hitrate_at_{k}"] = h.any(1).astype(np.float64)
    first = np.where(hits.any(1), hits.argmax(1) + 1, np.inf)
    out["mrr"] = 1.0 / first
    return out


def list_metrics(hits: np.ndarray, n_relevant: np.ndarray, ks: list[int]) -> dict[str, float]:
    """Recall, NDCG and HitRate at each k, and MRR, averaged over users with at least one relevant item.

    Example:
        >>> h = np.array([[True, False], [False, False]]); list_metrics(h, np.array([1, 2]), [2])["ndcg_at_2"]
        0.5
    """
    n_users = int((n_relevant > 0).sum())
    out: dict[str, float] = {"n_eval_users": float(n_users)}
    for name, values in per_user(hits, n_relevant, ks).items():
        out[name] = float(values.mean()) if n_users else 0.0
    return out


def coverage(lists: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one list."""
    return float(len(np.unique(lists[lists >= 0])) / max(n_items, 1))
