"""What a night's lists look like as a whole, and how much they change against the live ones.

Everything here is computed from counts, in one pass over the lists, chunk by chunk: recommendation counts per
item, rows per category, fallback users, and per user the overlap with that user's live list. Nothing is
items x items or users x users, so 1M users x K=20 costs seconds.

- coverage: distinct recommended items / recommendable items;
- Gini of the recommendation counts over the recommendable catalog (0: every item equally often; 1: one item);
- ARP: mean popularity (training-window interactions) of the recommended items, per row;
- novelty: mean self-information ``-log2 p(i)`` of the recommended items, ``p`` = the item's share of
  interactions (an item never interacted with counts as seen once);
- personalisation: 1 - the mean overlap@K of two users' lists, over every pair of users. Each item appears at
  most once per list, so the pairs sharing item i number ``c_i (c_i - 1) / 2``;
- churn against the live lists, per user present in both: Jaccard@K and rank-biased overlap (RBO, p = 0.9,
  truncated at K and normalised so identical lists score 1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

RBO_P = 0.9
REPLACED_JACCARD = 0.1  # a list sharing less than this with the live one "changed almost entirely"
CHURN_BINS = np.linspace(0.0, 1.0, 11)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (one per item of the catalog, zeros included)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2.0 * (ranks * x).sum()) / (n * total) - (n + 1.0) / n)


def personalisation(item_counts: np.ndarray, n_users: int, k: int) -> float:
    """1 - mean pairwise overlap@K of the users' lists, from how many lists hold each item."""
    if n_users < 2 or k < 1:
        return 1.0
    c = np.asarray(item_counts, dtype=np.float64)
    shared_pairs = (c * (c - 1.0)).sum() / 2.0
    pairs = n_users * (n_users - 1.0) / 2.0
    return float(1.0 - shared_pairs / (pairs * k))


def rbo_weights(k: int, p: float = RBO_P) -> np.ndarray:
    """``w[m]`` (m = 1..K, index 0 unused): what one item found in both lists at depth ``m`` adds to RBO.

    RBO@K = (1-p)/(1-p^K) * sum_{d=1..K} p^(d-1) |A[:d] & B[:d]| / d; an item at ranks a and b is in both
    prefixes from depth max(a, b) on, so it adds ``sum_{d=max(a,b)..K} p^(d-1) / d``.
    """
    d = np.arange(1, k + 1, dtype=np.float64)
    terms = p ** (d - 1) / d
    tail = np.cumsum(terms[::-1])[::-1]
    return np.concatenate([[0.0], tail * (1 - p) / (1 - p**k)])


def churn(new: pd.DataFrame, live: pd.DataFrame, k: int, p: float = RBO_P) -> pd.DataFrame:
    """Per user present in both frames (``user_id, rank, item_id``): Jaccard@K and RBO@K of the two lists.

    Returns:
        A frame indexed by user_id with ``jaccard`` and ``rbo``.
    """
    new = new[new["rank"] <= k]
    live = live[live["rank"] <= k]
    common = np.intersect1d(new["user_id"].unique(), live["user_id"].unique())
    if len(common) == 0:
        return pd.DataFrame({"jaccard": [], "rbo": []}, index=pd.Index([], name="user_id"))
    n_new = new.groupby("user_id").size().reindex(common)
    n_live = live.groupby("user_id").size().reindex(common)
    both = new.merge(live, on=["user_id", "item_id"], suffixes=("_new", "_live"))
    w = rbo_weights(k, p)
    both["w"] = w[np.maximum(both["rank_new"].to_numpy(), both["rank_live"].to_numpy())]
    per_user = both.groupby("user_id").agg(shared=("w", "size"), rbo=("w", "sum"))
    per_user = per_user.reindex(common, fill_value=0)
    union = n_new.to_numpy() + n_live.to_numpy() - per_user["shared"].to_numpy()
    out = pd.DataFrame(
        {"jaccard": per_user["shared"].to_numpy() / np.maximum(union, 1), "rbo": per_user["rbo"].to_numpy()},
        index=pd.Index(common, name="user_id"),
    )
    return out


@dataclass
class ListStats:
    """Accumulates a night's lists chunk by chunk; :meth:`metrics` gives the figures.

    Args:
        items: The recommendable catalog, ``item_id``, ``popularity`` (training-window interactions) and
            ``category`` (any label) per item.
        k: The list length asked for.
    """

    items: pd.DataFrame
    k: int
    users: int = 0
    rows: int = 0
    fallback_users: int = 0
    outside_catalog: int = 0
    counts: np.ndarray = field(init=False)
    _codes: pd.Index = field(init=False, repr=False)
    _churn: list[pd.DataFrame] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._codes = pd.Index(self.items["item_id"])
        self.counts = np.zeros(len(self.items), dtype=np.int64)

    def add(self, lists: pd.DataFrame, live: pd.DataFrame | None = None) -> None:
        """One chunk of whole lists (``user_id, rank, item_id, source``), with the live lists of its users."""
        lists = lists[lists["rank"] <= self.k]
        self.users += lists["user_id"].nunique()
        self.rows += len(lists)
        self.fallback_users += lists.loc[lists["source"] == "fallback", "user_id"].nunique()
        codes = self._codes.get_indexer(lists["item_id"])
        self.outside_catalog += int((codes < 0).sum())
        self.counts += np.bincount(codes[codes >= 0], minlength=len(self.counts))
        if live is not None:
            self._churn.append(churn(lists, live, self.k))

    def add_all(self, chunks: Iterable[tuple[pd.DataFrame, pd.DataFrame | None]]) -> ListStats:
        for lists, live in chunks:
            self.add(lists, live)
        return self

    def churn_frame(self) -> pd.DataFrame | None:
        return pd.concat(self._churn) if self._churn else None

    def metrics(self) -> dict[str, float]:
        """The night's figures (churn ones only when live lists were given)."""
        pop = self.items["popularity"].to_numpy(dtype=np.float64)
        in_lists = self.counts.sum()
        share = np.maximum(pop, 1.0) / max(np.maximum(pop, 1.0).sum(), 1.0)
        out = {
            "users": float(self.users),
            "coverage": float((self.counts > 0).sum() / max(len(self.counts), 1)),
            "gini": gini(self.counts),
            "arp": float((self.counts * pop).sum() / in_lists) if in_lists else 0.0,
            "novelty": float((self.counts * -np.log2(share)).sum() / in_lists) if in_lists else 0.0,
            "personalisation": personalisation(self.counts, self.users, self.k),
            "fallback_share": self.fallback_users / self.users if self.users else 0.0,
        }
        ch = self.churn_frame()
        if ch is not None and len(ch):
            j = ch["jaccard"].to_numpy()
            out |= {
                "churn_users": float(len(ch)),
                "jaccard_mean": float(j.mean()),
                "jaccard_p10": float(np.quantile(j, 0.1)),
                "jaccard_p50": float(np.quantile(j, 0.5)),
                "jaccard_p90": float(np.quantile(j, 0.9)),
                "rbo_mean": float(ch["rbo"].mean()),
                "replaced_share": float((j < REPLACED_JACCARD).mean()),
            }
        return out

    def category_mix(self) -> pd.Series:
        """Share of recommendations per category, largest first."""
        mix = pd.Series(self.counts, index=self.items["category"].to_numpy()).groupby(level=0).sum()
        total = mix.sum()
        return (mix / total if total else mix).sort_values(ascending=False)

    def churn_histogram(self) -> np.ndarray | None:
        """Users per Jaccard@K decile (``CHURN_BINS``)."""
        ch = self.churn_frame()
        return None if ch is None else np.histogram(ch["jaccard"].to_numpy(), bins=CHURN_BINS)[0]


@dataclass
class NightLists:
    """Tonight's lists figured, and the live ones they replace (None before the first publish)."""

    new: ListStats
    live: ListStats | None = None
    live_key: str | None = None  # the live manifest compared with
