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
import pyarrow.compute as pc
import pyarrow.dataset as pads

from nightrec.evaluation.list_metrics import (
    EMPTY,
    OUTSIDE,
    RBO_P,
    ListStats,
    NightLists,
    churn_table,
    dense,
    overlap,
)
from nightrec.io import lake
from nightrec.io.codes import encode
from nightrec.io.store import ObjectStore, StoreError, open_store
from nightrec.publish import pointer, snapshot
from nightrec.scoring import inputs
from nightrec.settings import Settings
from schemas.manifest import Manifest

log = logging.getLogger(__name__)
COLUMNS = ["user_id", "rank", "item_id", "source"]
STRINGS = ["user_id", "item_id", "source"]  # read as Parquet stores them: dictionaries, no per-row hashing


def recommendable(settings: Settings, ds: date) -> pd.DataFrame:
    """The items a list may hold tonight (available, not blocked): item_id, popularity, category."""
    items = inputs.load_items(settings.lake, ds, "serve")
    frame = pd.DataFrame(
        {"item_id": items.item_id, "popularity": items.popularity, "category": items.category_idx}
    )
    ok = items.available & ~frame["item_id"].isin(set(settings.scoring.blocklist)).to_numpy()
    return frame[ok].reset_index(drop=True)


def read_lists(path) -> pa.Table:
    """A folder of list Parquet (the lake's recs partition) as one Arrow table, its strings as dictionaries."""
    options = pads.ParquetReadOptions(dictionary_columns=STRINGS)
    return pads.dataset(str(path), format=pads.ParquetFileFormat(read_options=options)).to_table(
        columns=COLUMNS
    )


def list_figures(settings: Settings, ds: date) -> NightLists:
    """The lists of ``ds`` in the lake figured, with the live snapshot's own figures and the churn against it
    when there is one. An unreadable live snapshot leaves churn out (logged); publish reports the store itself.
    """
    path = lake.require_partition(settings.lake, settings.recs_table, ds)
    recs = read_lists(path)
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
    """``recs`` and a published snapshot figured together, one part of the snapshot in memory at a time.

    Tonight's strings are hashed once into codes (users, and items by their catalog position) and laid out as
    a users x K matrix; each live part hashes its own and maps its distinct values onto the same codes into a
    second matrix, so churn is one comparison of two integer matrices.
    Two items outside tonight's catalog never count as shared (neither list may hold one; the gate's audit
    fails such lists anyway).
    """
    new, old = ListStats(items, k), ListStats(items, k)
    if not manifest.parts:
        return NightLists(new.add_all([(recs, None)]))
    catalog = new.catalog
    users, user = encode(recs["user_id"])
    n_users = len(users)
    item = _catalog_codes(catalog, recs["item_id"])
    new.absorb_codes(user, item, _fallback(recs), n_users)
    tonight = dense(user, item, recs["rank"].to_numpy().astype(np.int64), n_users, k)
    live = np.full_like(tonight, EMPTY)  # the live lists of tonight's users, filled part by part
    user_index = pd.Index(users.to_pandas())
    n_live = np.zeros(n_users, dtype=np.int64)
    for _, part in snapshot.read_parts(store, manifest, COLUMNS, dictionary=STRINGS):
        if part.num_rows:  # a rank outside 1..K is not in the list a user sees
            part = part.filter(pc.and_(pc.greater_equal(part["rank"], 1), pc.less_equal(part["rank"], k)))
        live_users, local = encode(part["user_id"])
        live_item = _catalog_codes(catalog, part["item_id"])
        old.absorb_codes(local, live_item, _fallback(part), len(live_users))
        live_user = user_index.get_indexer(live_users.to_pandas())[local]
        mine = live_user >= 0
        n_live += np.bincount(live_user[mine], minlength=n_users)
        rank = part["rank"].to_numpy().astype(np.int64)[mine]
        live[live_user[mine], rank - 1] = np.where(live_item[mine] >= 0, live_item[mine], OUTSIDE)
    shared, rbo = overlap(tonight, live, RBO_P)
    new.set_churn(churn_table(users, shared, rbo, np.bincount(user, minlength=n_users), n_live))
    return NightLists(new, old, key)


def _catalog_codes(catalog: pd.Index, item_ids: pa.ChunkedArray) -> np.ndarray:
    """Each row's position in the catalog (-1 outside it): every distinct id looked up once."""
    values, code = encode(item_ids)
    return catalog.get_indexer(values.to_pandas())[code]


def _fallback(table: pa.Table) -> np.ndarray:
    values, code = encode(table["source"])
    return (values.to_numpy(zero_copy_only=False) == "fallback")[code]
