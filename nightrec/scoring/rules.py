"""Business rules applied while scoring: blocklist, boosts, and the cold-start lists per user segment.

Availability and the per-category cap live in the scorer itself (they shape the candidate search); the rules
here come from settings and the lake and are resolved once per night into arrays over the item table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from nightrec.io import lake
from nightrec.scoring.inputs import ItemTable, UserTable, positions
from nightrec.settings import ScoringSettings
from schemas.arrow import to_arrow_schema
from schemas.tables import COLDSTART, VOCAB

log = logging.getLogger(__name__)


@dataclass
class Rules:
    """Per-night rules over the item table's positions.

    Attributes:
        blocked: bool [N], never recommended (settings' blocklist).
        boost: float32 [N] added to each candidate's final score, in standard deviations of the user's
            candidate scores (0 = no boost; negative demotes); None when no boost is set.
        segment_popular: segment index -> item positions, most popular first: the cold-start list of the
            users of a segment with enough history; other cold users get the global popular list.
    """

    blocked: np.ndarray | None = None
    boost: np.ndarray | None = None
    segment_popular: dict[int, np.ndarray] = field(default_factory=dict)


def category_indices(lake_root: str, ds: date) -> dict[str, int]:
    """Category value -> vocabulary index, from the night's vocabulary partition."""
    return vocab_indices(lake_root, ds, "category")


def vocab_indices(lake_root: str, ds: date, field: str) -> dict[str, int]:
    """Value -> vocabulary index of one field (category, segment, ...) in the night's vocabulary partition."""
    path = lake.require_partition(lake_root, VOCAB.name, ds)
    t = pads.dataset(str(path), format="parquet").to_table(
        columns=["value", "idx"], filter=pc.field("field") == field
    )
    return dict(zip(t["value"].to_pylist(), t["idx"].to_pylist(), strict=True))


def popular_order(items: ItemTable, allowed: np.ndarray) -> np.ndarray:
    """Allowed item positions, most popular first (ties: item id): the global cold-start list."""
    order = np.lexsort((items.item_id, -items.popularity))
    return order[allowed[order]]


def coldstart_table(
    items: ItemTable,
    allowed: np.ndarray,
    segment_popular: dict[int, np.ndarray],
    segments: dict[str, int],
    k: int,
) -> pa.Table:
    """The night's cold-start lists as served to users without a list of their own: the global popular list
    (segment '') and each segment's list (``segment_popular``; ``segments``: name -> vocabulary index), scored
    by popularity as the fallback lists in the snapshot are."""
    names = {idx: name for name, idx in segments.items()}
    lists = {"": popular_order(items, allowed)[:k]}
    lists |= {names[s]: top[:k] for s, top in sorted(segment_popular.items()) if s in names}
    segment = [name for name, top in lists.items() for _ in top]
    pos = np.concatenate([top for top in lists.values()]).astype(np.int64)
    rank = np.concatenate([np.arange(1, len(top) + 1) for top in lists.values()]).astype(np.int32)
    return pa.table(
        {
            "segment": pa.array(segment, pa.string()),
            "rank": rank,
            "item_id": pa.array(items.item_id[pos], pa.string()),
            "score": items.popularity[pos].astype(np.float64),
        },
        schema=to_arrow_schema(COLDSTART),
    )


def item_boosts(items: ItemTable, sc: ScoringSettings, categories: dict[str, int]) -> np.ndarray | None:
    """float32 [N] boost per item position: its category's boost plus its own (unknown keys are logged)."""
    if not sc.item_boosts and not sc.category_boosts:
        return None
    boost = np.zeros(len(items), dtype=np.float32)
    for value, b in sc.category_boosts.items():
        if value not in categories:
            log.warning("category boost %r: no such category in tonight's vocabulary; ignored", value)
            continue
        boost[items.category_idx == categories[value]] += b
    pos = positions(np.asarray(list(sc.item_boosts), dtype=object), items.item_id)
    for (item_id, b), p in zip(sc.item_boosts.items(), pos, strict=True):
        if p < 0:
            log.warning("item boost %r: no such item in tonight's catalog; ignored", item_id)
            continue
        boost[p] += b
    return boost


def segment_popular(
    pairs: pa.Table, users: UserTable, items: ItemTable, allowed: np.ndarray, k: int, min_users: int
) -> dict[int, np.ndarray]:
    """The k most engaged allowed items per user segment (by summed weight), for segments with at least
    ``min_users`` users with history; each list is topped up from global popularity where short."""
    u = positions(pairs["user_id"], users.user_id)
    i = positions(pairs["item_id"], items.item_id)
    w = pairs["weight"].to_numpy()
    keep = (u >= 0) & (i >= 0) & (w > 0)
    seg = users.segment_idx[u[keep]]
    known = seg > 0  # 0 = unknown segment: those users get the global list
    seg, items_i, w, users_i = seg[known], i[keep][known], w[keep][known], u[keep][known]
    if not len(seg):
        return {}
    n_users = np.bincount(seg[np.unique(users_i, return_index=True)[1]])
    big = np.isin(seg, np.flatnonzero(n_users >= min_users))
    # One summed weight per (segment, item): the same input the Spark path aggregates.
    codes, inverse = np.unique(seg[big] * len(items) + items_i[big], return_inverse=True)
    sums = np.bincount(inverse, weights=w[big], minlength=len(codes))
    return rank_segment_lists(codes // len(items), codes % len(items), sums, items, allowed, k)


def rank_segment_lists(
    segment: np.ndarray,
    item_pos: np.ndarray,
    weight: np.ndarray,
    items: ItemTable,
    allowed: np.ndarray,
    k: int,
) -> dict[int, np.ndarray]:
    """Per segment, its items by summed weight (ties: global popularity, then item id), allowed ones only,
    the first k, topped up from the global popular list where short."""
    global_order = popular_order(items, allowed)
    out = {}
    for s in np.unique(segment):
        mask = (segment == s) & (item_pos >= 0)
        pos, w = item_pos[mask], weight[mask]
        order = np.lexsort((items.item_id[pos], -items.popularity[pos], -w))
        top = pos[order][allowed[pos[order]] & (w[order] > 0)][:k]
        if len(top) < k:
            top = np.concatenate([top, global_order[~np.isin(global_order, top)][: k - len(top)]])
        out[int(s)] = top
    return out
