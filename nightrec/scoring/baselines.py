"""Baseline policies in the scorer's shape: user vectors times item vectors, refit on each night's data.

Popularity is a one-dimensional product (every user's vector is 1, an item's is its rank by popularity), and
EASE is the user's binary engagement row times the item-item weights. Written this way they go through the same
``Scorer`` as the two-tower model: the same seen and unavailable filtering, blocklist, boosts, category cap and
cold-start fallback, so a baseline that wins the promotion gate serves lists held to the same rules.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from nightrec.scoring import ease, inputs
from nightrec.scoring.inputs import ItemTable, SeenIndex, UserTable
from nightrec.scoring.policies import Policy
from nightrec.settings import Settings


class Baseline:
    """A policy the scorer multiplies out like the two-tower model: ``user_vectors(users) @ item_vectors().T``."""

    policy: Policy

    def eval(self) -> Baseline:  # the scorer puts its models in eval mode
        return self

    def item_vectors(self) -> torch.Tensor:
        """float32 [N, D], one row per item of the item table."""
        raise NotImplementedError

    def user_vectors(self, users: UserTable) -> torch.Tensor:
        """float32 [B, D] for a chunk of the user table (dense, or sparse CSR)."""
        raise NotImplementedError

    def shared_scores(self) -> np.ndarray | None:
        """float32 [N]: where every user's scores are the same item scores (popularity), those; else None.
        The scorer then walks that one order past each user's seen items instead of multiplying out users x
        items (``retrieve.RankedTopN``)."""
        return None


class PopularityBaseline(Baseline):
    """Items by engagement in a recent window. An item's score is its rank from the bottom (unique: ties go to
    the smaller item id), so the order is exact in float32 and the same on every run."""

    def __init__(self, policy: Policy, items: ItemTable, engagement: np.ndarray):
        self.policy = policy
        order = np.lexsort((items.item_id, -engagement))
        rank_score = np.empty(len(items), dtype=np.float32)
        rank_score[order] = np.arange(len(items), 0, -1, dtype=np.float32)
        self._scores = rank_score
        self._items = torch.from_numpy(rank_score)[:, None]

    def item_vectors(self) -> torch.Tensor:
        return self._items

    def user_vectors(self, users: UserTable) -> torch.Tensor:
        return torch.ones((len(users), 1))

    def shared_scores(self) -> np.ndarray:
        return self._scores


class EaseBaseline(Baseline):
    """EASE (Steck, 2019): a user's scores are their binary engagement row times the item-item weights, plus
    an optional per-item prior (recent popularity): one more column of the product, 1 for every user.

    With ``subset`` (item positions, sorted) the weights are over those items only (a large catalog's most
    engaged); the scorer then searches only them (``subset``) and the vectors have one row per subset item.
    """

    def __init__(
        self,
        policy: Policy,
        weights: torch.Tensor,
        user_ids: np.ndarray,
        engaged: SeenIndex,
        prior: np.ndarray | None = None,
        subset: np.ndarray | None = None,
    ):
        self.policy = policy
        self.weights = weights
        self.user_ids, self.engaged, self.subset = user_ids, engaged, subset
        if subset is not None:
            size = max(int(engaged.indices.max(initial=-1)), int(subset.max(initial=-1))) + 1
            self._column = ease.column_of(subset, size)  # item position -> weights column (-1: none)
            prior = prior[subset] if prior is not None else None
        self.prior = (
            None if prior is None or not np.any(prior) else torch.as_tensor(prior, dtype=torch.float32)
        )

    def item_vectors(self) -> torch.Tensor:
        if self.prior is None:
            return self.weights.T
        return torch.cat([self.weights.T, self.prior[:, None]], dim=1)

    def user_vectors(self, users: UserTable) -> torch.Tensor:
        """Sparse CSR rows: each user's engaged items (1), and the prior's column (1) where there is one."""
        n_items = self.weights.shape[0]
        rows = inputs.positions(users.user_id, self.user_ids)
        r = c = np.zeros(0, dtype=np.int64)
        known = np.flatnonzero(rows >= 0)
        if len(known):
            lo, hi = self.engaged.indptr[rows[known]], self.engaged.indptr[rows[known] + 1]
            n = hi - lo
            r = np.repeat(known, n)
            c = self.engaged.indices[np.repeat(lo - np.cumsum(n) + n, n) + np.arange(int(n.sum()))]
            if self.subset is not None:
                c = self._column[c]
                r, c = r[c >= 0], c[c >= 0]
        width = n_items
        if self.prior is not None:
            r = np.concatenate([r, np.arange(len(users))])
            c = np.concatenate([c, np.full(len(users), n_items)])
            width += 1
        return ease.binary_rows(r, c, len(users), width)


def window_engagement(pairs: pa.Table, items: ItemTable) -> np.ndarray:
    """Summed engagement weight per item position from (user_id, item_id, weight) rows."""
    pos = inputs.positions(pairs["item_id"], items.item_id)
    w = pairs["weight"].to_numpy()
    keep = pos >= 0
    return np.bincount(pos[keep], weights=w[keep], minlength=len(items))


def recency_prior(settings: Settings, ds: date, cutoff: date, days: int, items: ItemTable) -> np.ndarray:
    """Each item's engagement over the ``days`` before ``cutoff``, scaled so the most engaged item is 1."""
    pairs = inputs.load_interactions(
        settings.lake, ds, cutoff - timedelta(days=days), cutoff, settings.features, arrow=True
    )
    e = window_engagement(pairs, items)
    return e / e.max() if len(e) and e.max() > 0 else np.zeros(len(items))


def engaged_pairs(pairs: pa.Table) -> pa.Table:
    return pairs.filter(pc.greater(pairs["weight"], 0.0))


def fit_ease_gram(
    engaged: pa.Table, items: ItemTable, max_items: int | None = None
) -> tuple[torch.Tensor, np.ndarray | None]:
    """EASE's Gram matrix from every engaged (user_id, item_id) pair, and the item positions it is over: the
    whole item table, or (None returned as every item) its ``max_items`` most engaged items."""
    cols = inputs.positions(engaged["item_id"], items.item_id)
    users = pc.dictionary_encode(engaged["user_id"]).combine_chunks().indices.to_numpy()
    keep = cols >= 0
    users, cols = users[keep], cols[keep]
    n_users = int(users.max(initial=-1)) + 1
    subset = ease.top_columns(cols, len(items), max_items)
    kept, cols = ease.restrict(cols, subset, len(items))
    return ease.gram(users[kept], cols, n_users, len(items) if subset is None else len(subset)), subset


def build(
    policy: Policy, settings: Settings, ds: date, cutoff: date, users: UserTable, items: ItemTable
) -> Baseline:
    """Refit a baseline ``policy`` on the interactions of ``ds``'s lake before ``cutoff``, for ``users``.

    Raises:
        ValueError: ``policy`` is the learned one (it comes from the registry, not from here).
    """
    cfg = settings.features
    if policy.kind == "popularity":
        w = int(policy.params.get("window_days", 0))
        start = cutoff - timedelta(days=w) if w else None
        pairs = inputs.load_interactions(settings.lake, ds, start, cutoff, cfg, arrow=True)
        return PopularityBaseline(policy, items, window_engagement(pairs, items))
    if policy.kind == "ease":
        pairs = engaged_pairs(inputs.load_interactions(settings.lake, ds, None, cutoff, cfg, arrow=True))
        g, subset = fit_ease_gram(pairs, items, policy.params.get("max_items"))
        weights = ease.weights_from_gram(g, float(policy.params["l2"]))
        w = float(policy.params.get("recency_weight", 0.0))
        prior = (
            w * recency_prior(settings, ds, cutoff, int(policy.params["recency_days"]), items) if w else None
        )
        seen = inputs.build_seen(pairs, users, items)
        return EaseBaseline(policy, weights, users.user_id, seen, prior, subset)
    raise ValueError(f"{policy.name} is not a baseline policy")
