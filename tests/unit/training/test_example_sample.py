"""The training budget's sample: streamed from the Parquet files, uniform over days and users, reproducible."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec.io import lake
from nightrec.training import datasets
from nightrec.training.datasets import Sample
from schemas.tables import RETRIEVAL_EXAMPLES

DS = date(2026, 11, 22)
N_TRAIN, N_VALID, FILES = 200_000, 20_000, 4
FIRST = datetime(2026, 8, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory):
    """A retrieval_examples partition as the feature build writes it: split folders, several files, time order."""
    root = tmp_path_factory.mktemp("lake")
    part = lake.partition_path(root, RETRIEVAL_EXAMPLES.name, DS)
    rng = np.random.default_rng(0)
    for split, n in (("train", N_TRAIN), ("valid", N_VALID)):
        folder = part / f"split={split}"
        folder.mkdir(parents=True)
        day = np.sort(rng.integers(0, 100, n))  # 100 days, in time order as written
        for i, rows in enumerate(np.array_split(np.arange(n), FILES)):
            t = pa.table(
                {
                    "user_idx": pa.array(rng.integers(1, 5_000, len(rows)), pa.int32()),
                    "segment_idx": pa.array(np.ones(len(rows)), pa.int32()),
                    "history": pa.array([[1, 2, 3]] * len(rows), pa.list_(pa.int32())),
                    "item_idx": pa.array(rng.integers(1, 1_000, len(rows)), pa.int32()),
                    "category_idx": pa.array(np.ones(len(rows)), pa.int32()),
                    "weight": pa.array(np.ones(len(rows))),
                    "ts": pa.array(
                        [FIRST + timedelta(days=int(d)) for d in day[rows]], pa.timestamp("us", "UTC")
                    ),
                }
            )
            pq.write_table(t, folder / f"part-{i}.parquet", row_group_size=10_000)
    lake.write_marker(part, "fp")
    return root


def _load(root, split, sample):
    return datasets.load_retrieval_examples(root, DS, split, history_len=5, with_day=True, sample=sample)


def test_a_split_over_the_budget_is_a_uniform_sample_of_about_that_many(lake_root):
    full = _load(lake_root, "train", Sample())
    sample = _load(lake_root, "train", Sample(max_rows=20_000, seed=3))
    assert len(full) == N_TRAIN == datasets.count_rows(lake_root, RETRIEVAL_EXAMPLES.name, DS, "train")
    assert abs(len(sample) - 20_000) < 600  # binomial: sd ~134
    # Every day in proportion (the newest rows alone would hold the last ~10 days only).
    days_full = np.bincount(full.day.numpy() - full.day.numpy().min(), minlength=100) / len(full)
    days_sample = np.bincount(sample.day.numpy() - full.day.numpy().min(), minlength=100) / len(sample)
    assert (days_sample > 0).all()
    assert np.abs(days_sample - days_full).max() < 0.005
    # Time order kept (the sample is a subsequence of the split), users spread like the split's.
    assert (np.diff(sample.day.numpy()) >= 0).all()
    assert abs(sample.user_idx.float().mean() - full.user_idx.float().mean()) < 50


def test_the_sample_is_the_same_for_the_same_seed_and_another_for_another(lake_root):
    a = _load(lake_root, "train", Sample(max_rows=5_000, seed=3))
    b = _load(lake_root, "train", Sample(max_rows=5_000, seed=3))
    c = _load(lake_root, "train", Sample(max_rows=5_000, seed=4))
    assert len(a) == len(b) and bool((a.item_idx == b.item_idx).all()) and bool((a.day == b.day).all())
    assert len(a) != len(c) or not bool((a.item_idx == c.item_idx).all())


def test_a_split_within_the_budget_is_read_whole(lake_root):
    whole = _load(lake_root, "valid", Sample(max_rows=N_VALID, seed=3))
    assert len(whole) == N_VALID
    assert whole.history.shape == (N_VALID, 5) and whole.history[0, :3].tolist() == [1, 2, 3]
