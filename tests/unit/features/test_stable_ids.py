"""Ids cannot drift: an index is assigned once, ever, so a model keeps reading its ids right after any re-run.

The catalog and the user table change between two builds of one date, and between consecutive dates: an item
whose id sorts first (it would take index 1 if the vocabulary were rebuilt in sorted order) and a new user
arrive, a user without history leaves. The rebuilt vocabulary must keep every earlier index; the lists a
model makes on it must be the lists it made before, up to the new item; and a vocabulary built from scratch
must be refused by the check every scoring path runs.
"""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from nightrec.features import build
from nightrec.io import lake, vocab_identity
from nightrec.models.configs import TwoTowerConfig
from nightrec.models.two_tower import TwoTower
from nightrec.scoring.precompute import precompute
from nightrec.settings import Settings
from nightrec.training import datasets
from tests.unit.features import _lake_compare as lc
from tests.unit.features.conftest import CFG, RUN_DATE, lake_copy

pytestmark = pytest.mark.spark

NEW_ITEM, NEW_USER = "a-new-item", "a-new-user"


def _edit_catalog(raw) -> str:
    """Add NEW_ITEM and NEW_USER, drop one user without events; returns the dropped user's id."""
    items = pq.read_table(raw / "items")
    row = items.slice(0, 1).to_pylist()[0] | {"item_id": NEW_ITEM}
    pq.write_table(
        pa.concat_tables([items, pa.Table.from_pylist([row], schema=items.schema)]), _only(raw / "items")
    )
    users = pq.read_table(raw / "users")
    active = set(pq.read_table(raw / "events", columns=["user_id"]).column("user_id").to_pylist())
    gone = next(u for u in users.column("user_id").to_pylist() if u not in active)
    kept = users.filter(pa.compute.not_equal(users["user_id"], gone))
    new = users.slice(0, 1).to_pylist()[0] | {"user_id": NEW_USER}
    pq.write_table(
        pa.concat_tables([kept, pa.Table.from_pylist([new], schema=users.schema)]), _only(raw / "users")
    )
    return gone


def _only(folder):
    (part,) = sorted(folder.glob("*.parquet"))
    return part


def _vocab(lake_root, ds) -> pd.DataFrame:
    return lc.read_frame(lake_root, "vocab", ds)[["field", "value", "idx"]]


def _assert_extends(before: pd.DataFrame, after: pd.DataFrame) -> None:
    joined = before.merge(after, on=["field", "value"], how="left", suffixes=("", "_after"))
    moved = joined[joined["idx"] != joined["idx_after"]]
    assert moved.empty, f"indices moved or values lost:\n{moved.head()}"


def _lists(tmp_path, lake_root, model, name, ds=RUN_DATE) -> pd.DataFrame:
    settings = Settings(home=tmp_path / name, lake=lake_root, features=CFG)
    precompute(settings, ds, model, None, fingerprint=name)
    out = pd.read_parquet(lake.partition_path(lake_root, "recs", ds))
    return out.sort_values(["user_id", "rank"])[["user_id", "item_id"]].reset_index(drop=True)


def test_a_rebuilt_date_extends_its_vocabulary_and_a_model_keeps_its_lists(
    spark, tiny_raw, clean_build, tmp_path
):
    raw = lc.copy_raw(tiny_raw, tmp_path / "raw")
    gone = _edit_catalog(raw)
    before = _vocab(clean_build.lake, RUN_DATE)
    # A model of the first build: random weights read their ids exactly as trained ones do, and cost nothing.
    torch.manual_seed(0)
    model = TwoTower(
        TwoTowerConfig.from_vocab(datasets.vocab_sizes(clean_build.lake, RUN_DATE), dim=16)
    ).eval()
    model.vocab_digest = vocab_identity.digest(clean_build.lake, RUN_DATE)
    old_lists = _lists(tmp_path, lake_copy(clean_build.lake, tmp_path / "old"), model, "old")

    # The same date again, on the changed catalog: the rebuild appends, never renumbers.
    rebuilt = lake_copy(clean_build.lake, tmp_path / "lake")
    summary = build.build_features(spark, raw, rebuilt, RUN_DATE, CFG)
    assert not summary.skipped
    after = _vocab(rebuilt, RUN_DATE)
    _assert_extends(before, after)
    new_idx = after.loc[(after["field"] == "item_id") & (after["value"] == NEW_ITEM), "idx"]
    assert new_idx.tolist() == [before.loc[before["field"] == "item_id", "idx"].max() + 1]
    vocab_identity.check_model(model, rebuilt, RUN_DATE, "the first build's model")  # no error

    # The model's lists on the rebuilt date are its lists before, up to the new item (which may enter them).
    new_lists = _lists(tmp_path, rebuilt, model, "new")
    assert gone in set(old_lists["user_id"]) and gone not in set(new_lists["user_id"])
    assert NEW_USER in set(new_lists["user_id"])
    k = old_lists.groupby("user_id").size().max()
    for user, old in old_lists.groupby("user_id"):
        if user == gone:
            continue
        new = new_lists.loc[new_lists["user_id"] == user, "item_id"].tolist()
        without = [i for i in new if i != NEW_ITEM]
        assert len(new) == k and without == old["item_id"].tolist()[: len(without)], user

    # The next date extends the rebuilt vocabulary in turn, and its lists are those of a lake where the date
    # was never re-run (the change first seen by the next night): the re-run moved no id.
    nxt = RUN_DATE + timedelta(days=1)
    build.build_features(spark, raw, rebuilt, nxt, CFG)
    _assert_extends(after, _vocab(rebuilt, nxt))
    clean = lake_copy(clean_build.lake, tmp_path / "clean-next")
    build.build_features(spark, raw, clean, nxt, CFG)
    pd.testing.assert_frame_equal(_vocab(clean, nxt), _vocab(rebuilt, nxt))
    pd.testing.assert_frame_equal(
        _lists(tmp_path, clean, model, "clean-next", nxt),
        _lists(tmp_path, rebuilt, model, "rebuilt-next", nxt),
    )


def test_a_vocabulary_built_from_scratch_is_refused(spark, tiny_raw, clean_build, tmp_path):
    raw = lc.copy_raw(tiny_raw, tmp_path / "raw")
    _edit_catalog(raw)
    fresh = str(tmp_path / "fresh")  # a wiped lake: NEW_ITEM sorts first and takes index 1
    build.build_features(spark, raw, fresh, RUN_DATE, CFG)
    trained_on = vocab_identity.digest(clean_build.lake, RUN_DATE)
    with pytest.raises(vocab_identity.VocabularyMismatch) as err:
        vocab_identity.check(trained_on, fresh, RUN_DATE, "nightrec-retrieval version 3")
    text = str(err.value)
    assert "nightrec-retrieval version 3" in text and "item_id" in text and str(RUN_DATE) in text
