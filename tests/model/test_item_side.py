"""The item side table: tags and catalog features by item index, and what they do to the towers."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nightrec.io import lake
from nightrec.models.configs import TwoTowerConfig
from nightrec.models.two_tower import TwoTower
from nightrec.training.item_side import load_item_side

DS = date(2026, 11, 20)


def _lake(tmp_path):
    folder = lake.partition_path(tmp_path, "item_features", DS)
    for role, tags in (
        ("eval", [["red", "sale"], ["red"], None, ["blue", "red", "x"]]),
        ("serve", [["zzz"]] * 4),
    ):
        (folder / f"role={role}").mkdir(parents=True)
        tbl = pa.table(
            {
                "item_idx": pa.array([1, 2, 3, 9], pa.int32()),
                "tags": pa.array(tags, pa.list_(pa.string())),
                "price_bucket": pa.array([10, 0, 5, 1], pa.int32()),
            }
        )
        pq.write_table(tbl, folder / f"role={role}" / "part.parquet")
    lake.write_marker(folder, "fp")
    return str(tmp_path)


def test_tags_are_indexed_by_frequency_and_rows_follow_item_indices(tmp_path):
    side = load_item_side(_lake(tmp_path), DS, n_items=6, max_tags=2, max_tag_vocab=2)
    # Item 9 is beyond the model's n_items: its tags ('blue', 'x') neither count nor get a row.
    assert side.tag_index == {"red": 1, "sale": 2}
    assert side.n_tags == 3
    assert side.tags.tolist() == [[0, 0], [1, 2], [1, 0], [0, 0], [0, 0], [0, 0]]
    assert side.dense[:4].tolist() == [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.5, 1.0]]


def test_the_side_table_moves_item_vectors_and_history_features_and_is_saved_with_the_model(tmp_path):
    side = load_item_side(_lake(tmp_path), DS, n_items=6)
    torch.manual_seed(0)
    cfg = TwoTowerConfig(
        n_users=3, n_items=6, n_categories=2, n_segments=2, dim=8, history_len=4, n_tags=side.n_tags
    )
    model = TwoTower(cfg)
    items, cats = torch.arange(6), torch.zeros(6, dtype=torch.long)
    hist = torch.tensor([[1, 3, 0, 0]])
    before_items = model.item_vectors(items, cats)
    before_user = model.user_vectors(torch.tensor([1]), torch.tensor([0]), hist)
    model.set_item_side(side.tags, side.dense)
    after_items = model.item_vectors(items, cats)
    changed = (before_items - after_items).abs().sum(1) > 1e-6
    assert changed.tolist() == [False, True, True, True, False, False]  # only items with side information
    assert not torch.allclose(before_user, model.user_vectors(torch.tensor([1]), torch.tensor([0]), hist))
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    torch.testing.assert_close(loaded.item_vectors(items, cats), after_items)
    with pytest.raises(ValueError, match="tag indices"):
        model.set_item_side(side.tags + 99, side.dense)
