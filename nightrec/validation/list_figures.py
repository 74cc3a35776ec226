"""Tonight's lists as a whole, and against the live ones: the figures the recs gate's change rules judge.

The live snapshot is read one part at a time; tonight's users are bucketed as the snapshot buckets them, so
each part is compared with the same users' new lists and memory stays one part.
"""

from __future__ import annotations

import logging
from datetime import date

import pandas as pd
import pyarrow as pa

from nightrec.evaluation.list_metrics import ListStats
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


def list_figures(settings: Settings, ds: date, recs: pd.DataFrame) -> tuple[ListStats, str | None]:
    """``recs`` figured, with churn against the live snapshot when there is one.

    Returns:
        The accumulated figures, and the live manifest compared with (None: nothing live, or unreadable).
    """
    items = recommendable(settings, ds)
    try:
        store = open_store(settings.store)
        live = pointer.read_live(store)
        if live is not None:
            manifest = snapshot.load_manifest(store, live[0].manifest_key)
            if manifest.parts:
                stats = ListStats(items, settings.scoring.top_k)
                buckets = snapshot.buckets_of(pa.array(recs["user_id"], pa.string()), len(manifest.parts))
                for i, part in snapshot.read_parts(store, manifest, ["user_id", "rank", "item_id"]):
                    stats.add(recs[buckets == i], part.to_pandas())
                return stats, live[0].manifest_key
    except StoreError as e:  # the lists are judged without churn; publish reports the store itself
        log.warning("live lists unreadable, churn not computed: %s", e)
    return ListStats(items, settings.scoring.top_k).add_all([(recs, None)]), None
