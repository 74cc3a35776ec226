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

from nightrec.evaluation.list_metrics import RBO_P, ListStats, NightLists, churn_table, overlap
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
    """``recs`` and a published snapshot figured together, one part of the snapshot in memory at a time.

    Tonight's strings are hashed once into codes (users, and items by their catalog position); each live part
    hashes its own and maps its few distinct values onto the same codes, so the per-part work is integers.
    Two items outside tonight's catalog never count as shared (neither list may hold one; the gate's audit
    fails such lists anyway).
    """
    new, old = ListStats(items, k), ListStats(items, k)
    if not manifest.parts:
        return NightLists(new.add_all([(recs, None)]))
    catalog = new.catalog
    n_cat = max(len(catalog), 1)
    users = pc.dictionary_encode(recs["user_id"].combine_chunks())
    user = users.indices.to_numpy().astype(np.int64)
    n_users = len(users.dictionary)
    item = _catalog_codes(catalog, recs["item_id"])
    rank = recs["rank"].to_numpy().astype(np.int64)
    new.absorb_codes(user, item, _fallback(recs), n_users)
    # Tonight's rows grouped by the part their user lives in (a radix sort of small ints).
    bucket = (snapshot.crc32_of(users.dictionary) % len(manifest.parts)).astype(np.uint16)[user]
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(len(manifest.parts) + 1))
    user_index = pd.Index(users.dictionary.to_pandas())
    shared = np.zeros(n_users, dtype=np.int64)
    rbo = np.zeros(n_users)
    n_live = np.zeros(n_users, dtype=np.int64)
    for i, part in snapshot.read_parts(store, manifest, COLUMNS):
        part = part.filter(pc.less_equal(part["rank"], k)) if part.num_rows else part
        live_users = pc.dictionary_encode(part["user_id"].combine_chunks())
        local = live_users.indices.to_numpy().astype(np.int64)
        live_item = _catalog_codes(catalog, part["item_id"])
        old.absorb_codes(local, live_item, _fallback(part), len(live_users.dictionary))
        # The live rows of tonight's users, on tonight's codes.
        live_user = user_index.get_indexer(live_users.dictionary.to_pandas())[local]
        mine = live_user >= 0
        n_live += np.bincount(live_user[mine], minlength=n_users)
        rows = order[bounds[i] : bounds[i + 1]]
        ok_new, ok_live = item[rows] >= 0, mine & (live_item >= 0)
        new_rows, live_rows = rows[ok_new], np.flatnonzero(ok_live)
        s, r = overlap(
            user[new_rows], user[new_rows] * n_cat + item[new_rows], rank[new_rows],
            live_user[live_rows], live_user[live_rows] * n_cat + live_item[live_rows],
            part["rank"].to_numpy().astype(np.int64)[live_rows], n_users, k, RBO_P,
        )  # fmt: skip
        shared += s
        rbo += r
    new.set_churn(churn_table(users.dictionary, shared, rbo, np.bincount(user, minlength=n_users), n_live))
    return NightLists(new, old, key)


def _catalog_codes(catalog: pd.Index, item_ids) -> np.ndarray:
    """Each row's position in the catalog (-1 outside it): every distinct id looked up once."""
    enc = pc.dictionary_encode(item_ids.combine_chunks() if hasattr(item_ids, "combine_chunks") else item_ids)
    return catalog.get_indexer(enc.dictionary.to_pandas())[enc.indices.to_numpy()]


def _fallback(table: pa.Table) -> np.ndarray:
    return pc.equal(table["source"], "fallback").to_numpy(zero_copy_only=False)
