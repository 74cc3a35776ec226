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
import pyarrow as pa
import pyarrow.compute as pc

Lists = pd.DataFrame | pa.Table  # user_id, rank, item_id (and source): whole lists

RBO_P = 0.9
REPLACED_JACCARD = 0.1  # a list sharing less than this with the live one "changed almost entirely"
CHURN_BINS = np.linspace(0.0, 1.0, 11)
EMPTY, OUTSIDE = -1, -2  # codes in a dense list matrix: no item at that rank; an item outside the catalog


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


def _table(lists: Lists, k: int) -> pa.Table:
    t = lists if isinstance(lists, pa.Table) else pa.Table.from_pandas(lists, preserve_index=False)
    if t.num_rows == 0 or pc.max(t["rank"]).as_py() <= k:
        return t  # the usual case: no copy
    return t.filter(pc.less_equal(t["rank"], k))


def _flat(column) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


@dataclass(frozen=True)
class _Encoded:
    """Lists as integer codes: the strings of every table given are hashed once, together (Arrow)."""

    users: pa.Array  # user code -> user_id
    user: np.ndarray  # per row
    item: np.ndarray  # per row, into the joint item dictionary
    items: pa.Array  # item code -> item_id
    rank: np.ndarray
    fallback: np.ndarray  # per row, bool
    sizes: tuple[int, ...]  # rows of each table, in order

    @classmethod
    def of(cls, *tables: pa.Table) -> _Encoded:
        def col(name: str) -> pa.Array:
            return pa.concat_arrays([_flat(t[name]) for t in tables])

        users, items = pc.dictionary_encode(col("user_id")), pc.dictionary_encode(col("item_id"))
        has_source = all("source" in t.column_names for t in tables)
        fallback = (
            pc.equal(col("source"), "fallback").to_numpy(zero_copy_only=False)
            if has_source
            else np.zeros(sum(t.num_rows for t in tables), dtype=bool)
        )
        return cls(
            users.dictionary,
            users.indices.to_numpy().astype(np.int64),
            items.indices.to_numpy().astype(np.int64),
            items.dictionary,
            col("rank").to_numpy().astype(np.int64),
            fallback,
            tuple(t.num_rows for t in tables),
        )

    def slice(self, which: int) -> slice:
        start = sum(self.sizes[:which])
        return slice(start, start + self.sizes[which])


def dense(user: np.ndarray, item: np.ndarray, rank: np.ndarray, n_users: int, k: int) -> np.ndarray:
    """Lists as a users x K matrix of item codes: rank r in column r - 1, ``EMPTY`` where a list is shorter,
    ``OUTSIDE`` for an item with a negative code (outside the catalog: it never counts as shared)."""
    mat = np.full((n_users, k), EMPTY, dtype=np.int32)
    ok = (rank >= 1) & (rank <= k)
    if not ok.all():
        user, item, rank = user[ok], item[ok], rank[ok]
    flat = user.astype(np.int64) * k + (rank - 1)
    mat.reshape(-1)[flat] = np.where(item >= 0, item, OUTSIDE)
    return mat


def overlap(new: np.ndarray, live: np.ndarray, p: float, chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per user (a row of both :func:`dense` matrices): items in both lists, and their RBO@K contribution.

    Every rank pair of a user's two lists compared at once (K x K per user, no hashing): an item at ranks a
    and b adds ``rbo_weights[max(a, b)]``. An item twice in a live list is matched once, at its first rank
    (the recs gate's audit fails such lists anyway).
    """
    n, k = new.shape
    pair_weight = rbo_weights(k, p)[np.maximum.outer(np.arange(1, k + 1), np.arange(1, k + 1))].ravel()
    shared, rbo = np.zeros(n, dtype=np.int64), np.zeros(n)
    for s in range(0, n, chunk):
        a, b = new[s : s + chunk], live[s : s + chunk]
        same = (a[:, :, None] == b[:, None, :]) & (a >= 0)[:, :, None]
        if len(a) and same.sum(axis=2).max() > 1:  # an item twice in a live list: its first rank counts
            same &= np.cumsum(same, axis=2) == 1
        same = same.reshape(len(a), k * k)
        shared[s : s + chunk] = same.sum(axis=1)
        rbo[s : s + chunk] = same.astype(np.float32) @ pair_weight.astype(np.float32)
    return shared, rbo


def churn_table(users: pa.Array, shared, rbo, n_new, n_live) -> pd.DataFrame:
    both = (n_new > 0) & (n_live > 0)
    union = np.maximum(n_new + n_live - shared, 1)
    return pd.DataFrame(
        {"jaccard": (shared / union)[both], "rbo": rbo[both]},
        index=pd.Index(users.to_pandas().to_numpy()[both], name="user_id"),
    )


def _churn(e: _Encoded, k: int, p: float) -> pd.DataFrame:
    """Jaccard@K and RBO@K per user present in both tables of ``e`` (new first, live second)."""
    a, b = e.slice(0), e.slice(1)
    n_users = len(e.users)
    new = dense(e.user[a], e.item[a], e.rank[a], n_users, k)
    shared, rbo = overlap(new, dense(e.user[b], e.item[b], e.rank[b], n_users, k), p)
    n_new = np.bincount(e.user[a], minlength=n_users)
    n_live = np.bincount(e.user[b], minlength=n_users)
    return churn_table(e.users, shared, rbo, n_new, n_live)


def churn(new: Lists, live: Lists, k: int, p: float = RBO_P) -> pd.DataFrame:
    """Per user present in both (``user_id, rank, item_id``): Jaccard@K and RBO@K of their two lists.

    Integer codes (the strings hashed once, by Arrow) laid out as users x K matrices and compared rank by
    rank, so a part of a 1M-user snapshot takes a fraction of a second.

    Returns:
        A frame indexed by user_id with ``jaccard`` and ``rbo``.
    """
    return _churn(_Encoded.of(_table(new, k), _table(live, k)), k, p)


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
    catalog: pd.Index = field(init=False, repr=False)  # the items' ids, for lookups
    _churn: list[pd.DataFrame] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.catalog = pd.Index(self.items["item_id"])
        self.counts = np.zeros(len(self.items), dtype=np.int64)

    def add(self, lists: Lists, live: Lists | None = None, live_stats: ListStats | None = None) -> None:
        """One chunk of whole lists (``user_id, rank, item_id, source``), with the live lists of its users
        (churn), whose own figures go to ``live_stats`` when given."""
        tables = [_table(lists, self.k)] + ([_table(live, self.k)] if live is not None else [])
        e = _Encoded.of(*tables)
        # The catalog position of each distinct item, looked up once.
        catalog = self.catalog.get_indexer(e.items.to_pandas())[e.item]
        self._absorb(e, e.slice(0), catalog)
        if live is not None:
            if live_stats is not None:
                live_stats._absorb(e, e.slice(1), catalog)
            self._churn.append(_churn(e, self.k, RBO_P))

    def _absorb(self, e: _Encoded, rows: slice, catalog: np.ndarray) -> None:
        self.absorb_codes(e.user[rows], catalog[rows], e.fallback[rows])

    def absorb_codes(
        self, user: np.ndarray, catalog: np.ndarray, fallback: np.ndarray, n_users: int | None = None
    ) -> None:
        """Rows given as codes: ``user`` (any integer code per user), ``catalog`` (the item's position in
        ``items``, -1 outside it), ``fallback`` (bool). ``n_users``: their distinct users, when known."""
        distinct = np.count_nonzero(np.bincount(user)) if len(user) else 0
        self.users += int(distinct if n_users is None else n_users)
        self.rows += len(user)
        fb = user[fallback]
        self.fallback_users += int(np.count_nonzero(np.bincount(fb))) if len(fb) else 0
        known = catalog >= 0
        self.outside_catalog += int((~known).sum())
        self.counts += np.bincount(catalog[known], minlength=len(self.counts))

    def set_churn(self, frame: pd.DataFrame) -> None:
        """Churn computed elsewhere (``validation.list_figures`` on codes), replacing any accumulated."""
        self._churn = [frame]

    def add_all(self, chunks: Iterable[tuple[Lists, Lists | None]]) -> ListStats:
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
