"""The two-tower's item side table from the lake: each item's tags and dense catalog features by item index."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import torch

from nightrec.io import lake
from nightrec.io.lists import pad_lists
from nightrec.models.two_tower import ITEM_DENSE
from schemas.tables import ITEM_FEATURES


@dataclass
class ItemSide:
    tags: torch.Tensor  # int64 [n_items, max_tags], 0-padded tag indices
    dense: torch.Tensor  # float32 [n_items, ITEM_DENSE]
    tag_index: dict[str, int]  # tag -> index (1-based; unknown tags read as 0)

    @property
    def n_tags(self) -> int:
        return len(self.tag_index) + 1


def load_item_side(
    lake_root: str | Path, ds: date, n_items: int, max_tags: int = 8, max_tag_vocab: int = 10_000
) -> ItemSide:
    """Tags and dense features of every item index below ``n_items``, from ``item_features`` (role eval: the
    catalog as of the holdout start, which is what the models train before).

    The tag vocabulary is the ``max_tag_vocab`` most frequent tags (ties by name), so it is stable for a
    catalog and rare tags do not grow the table. Only catalog attributes are used (see nightrec.models.two_tower).
    """
    path = lake.require_partition(lake_root, ITEM_FEATURES.name, ds)
    t = pads.dataset(str(path), format="parquet", partitioning="hive").to_table(
        columns=["item_idx", "tags", "price_bucket"], filter=pc.field("role") == "eval"
    )
    idx = t["item_idx"].to_numpy().astype(np.int64)
    keep = (idx > 0) & (idx < n_items)
    t, idx = t.filter(pa.array(keep)), idx[keep]
    tags_col = t["tags"].combine_chunks()
    flat = pc.list_flatten(tags_col)
    counts = pc.value_counts(flat)
    names = np.asarray(counts.field("values").to_pylist() if len(flat) else [], dtype=object)
    freq = counts.field("counts").to_numpy() if len(flat) else np.zeros(0, dtype=np.int64)
    order = np.lexsort((names, -freq))[:max_tag_vocab]
    vocab = names[order]
    tag_index = {str(v): i + 1 for i, v in enumerate(vocab)}
    if len(vocab):
        found = pc.index_in(flat, value_set=pa.array(vocab.tolist(), pa.string()))
        values = pc.add(found.fill_null(-1), 1)  # unknown -> 0
    else:
        values = pa.array(np.zeros(len(flat), dtype=np.int64))
    lengths = pc.list_value_length(tags_col).fill_null(0).to_numpy(zero_copy_only=False)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    per_item = pa.ListArray.from_arrays(offsets, values.cast(pa.int64()))
    tags = torch.zeros(n_items, max_tags, dtype=torch.long)
    tags[torch.from_numpy(idx)] = torch.from_numpy(pad_lists(per_item, max_tags))
    price = t["price_bucket"].to_numpy().astype(np.float32)
    dense = torch.zeros(n_items, ITEM_DENSE)
    dense[torch.from_numpy(idx)] = torch.from_numpy(
        np.stack([price / 10.0, (price > 0).astype(np.float32)], 1)
    )
    return ItemSide(tags, dense, tag_index)
