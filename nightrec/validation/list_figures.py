"""Tonight's lists as a whole, and against the live ones: the figures the recs gate's change rules judge.

The live snapshot is read one part at a time; tonight's users are bucketed as the snapshot buckets them, so
each part is compared with the same users' new lists and memory stays one part.
"""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import pyarrow as pa

from nightrec.evaluation.list_metrics import ListStats, NightLists
from nightrec.io.store import StoreError, open_store
from nightrec.publish import pointer, snapshot
from nightrec.scoring import inputs
from nightrec.settings import Settings

log = logging.getLogger(__name__)


def recommendable(settings: Settings, ds: date) -> pd.DataFrame:
    """The items a list may hold tonight (available, not blocked): item_id, popularity, category."""
    items = inputs.load_items(settings.lake, ds, "serve")
    frame = pd.DataFrame(
        {"item_id": items.item_id, "popularity": items.popularity, "category": items.category_idx}
    )
    ok = items.available & ~frame["item_id"].isin(set(settings.scoring.blocklist)).to_numpy()
    return frame[ok].reset_index(drop=True)


def list_figures(settings: Settings, ds: date, recs: pd.DataFrame) -> NightLists:
    """``recs`` figured, with the live snapshot's own figures and the churn against it when there is one.

    An unreadable live snapshot leaves churn out (logged); publish reports the store itself.
    """
    items = recommendable(settings, ds)
    k = settings.scoring.top_k
    try:
        store = open_store(settings.store)
        live = pointer.read_live(store)
        if live is not None:
            manifest = snapshot.load_manifest(store, live[0].manifest_key)
            if manifest.parts:
                new, old = ListStats(items, k), ListStats(items, k)
                buckets = snapshot.buckets_of(pa.array(recs["user_id"], pa.string()), len(manifest.parts))
                columns = ["user_id", "rank", "item_id", "source"]
                for i, part in snapshot.read_parts(store, manifest, columns):
                    frame = part.to_pandas()
                    new.add(recs[buckets == i], frame)
                    old.add(frame)
                return NightLists(new, old, live[0].manifest_key)
    except StoreError as e:
        log.warning("live lists unreadable, churn not computed: %s", e)
    return NightLists(ListStats(items, k).add_all([(recs, None)]))
