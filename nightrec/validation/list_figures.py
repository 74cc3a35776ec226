"""Tonight's lists as a whole, and against the live ones: the figures the recs gate's change rules judge.

The live snapshot is read one part at a time; tonight's users are bucketed as the snapshot buckets them, so
each part is compared with the same users' new lists and memory stays one part.
"""

from __future__ import annotations

import logging
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from nightrec.evaluation.list_metrics import ListStats, NightLists
from nightrec.io import lake
from nightrec.io.store import ObjectStore, StoreError, open_store
from nightrec.publish import pointer, snapshot
from nightrec.scoring import inputs
from nightrec.settings import Settings
from schemas.manifest import Manifest
from schemas.tables import RECS

log = logging.getLogger(__name__)
COLUMNS = ["user_id", "rank", "item_id", "source"]


def recommendable(settings: Settings, ds: date) -> pd.DataFrame:
    """The items a list may hold tonight (available, not blocked): item_id, popularity, category."""
    items = inputs.load_items(settings.lake, ds, "serve")
    frame = pd.DataFrame(
        {"item_id": items.item_id, "popularity": items.popularity, "category": items.category_idx}
    )
    ok = items.available & ~frame["item_id"].isin(set(settings.scoring.blocklist)).to_numpy()
    return frame[ok].reset_index(drop=True)


def list_figures(settings: Settings, ds: date) -> NightLists:
    """The lists of ``ds`` in the lake figured, with the live snapshot's own figures and the churn against it
    when there is one. An unreadable live snapshot leaves churn out (logged); publish reports the store itself.
    """
    path = lake.require_partition(settings.lake, RECS.name, ds)
    recs = pads.dataset(str(path), format="parquet").to_table(columns=COLUMNS)
    items = recommendable(settings, ds)
    k = settings.scoring.top_k
    try:
        store = open_store(settings.store)
        live = pointer.read_live(store)
        if live is not None:
            manifest = snapshot.load_manifest(store, live[0].manifest_key)
            return against_snapshot(items, k, recs, store, manifest, live[0].manifest_key)
    except StoreError as e:
        log.warning("live lists unreadable, churn not computed: %s", e)
    return NightLists(ListStats(items, k).add_all([(recs, None)]))


def against_snapshot(
    items: pd.DataFrame, k: int, recs: pa.Table, store: ObjectStore, manifest: Manifest, key: str
) -> NightLists:
    """``recs`` and a published snapshot figured together, one part of the snapshot in memory at a time."""
    new, old = ListStats(items, k), ListStats(items, k)
    if not manifest.parts:
        return NightLists(new.add_all([(recs, None)]))
    buckets = snapshot.buckets_of(recs["user_id"].combine_chunks(), len(manifest.parts))
    # Grouped by part once; each part's rows are then a zero-copy slice.
    order = np.argsort(buckets, kind="stable")
    grouped = recs.take(pa.array(order))
    bounds = np.searchsorted(buckets[order], np.arange(len(manifest.parts) + 1))
    for i, part in snapshot.read_parts(store, manifest, COLUMNS):
        new.add(grouped.slice(bounds[i], bounds[i + 1] - bounds[i]), part, live_stats=old)
    return NightLists(new, old, key)
