"""Spark's user and item aggregates equal an independent DuckDB implementation on the same raw data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.unit.features import _lake_compare as lc
from tests.unit.features.conftest import CFG, RUN_DATE

duckdb_reference = pytest.importorskip(
    "bench.duckdb_reference",
    reason="duckdb is not installed (pip install duckdb; it is in requirements-dev.txt)",
)

pytestmark = pytest.mark.spark


def _assert_columns_equal(spark_df: pd.DataFrame, ref: pd.DataFrame, key: str, what: str) -> None:
    assert len(spark_df) == len(ref), f"{what}: {len(spark_df)} rows in Spark, {len(ref)} in DuckDB"
    both = spark_df.merge(ref, on=key, how="outer", suffixes=("_spark", "_duckdb"), indicator=True)
    assert (both["_merge"] == "both").all(), f"{what}: keys differ"
    for col in (c for c in ref.columns if c != key):
        a, b = both[f"{col}_spark"], both[f"{col}_duckdb"]
        if pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
            a, b = a.astype("float64").to_numpy(), b.astype("float64").to_numpy()
            # Sums of doubles in a different order may differ in the last bit; counts must match exactly.
            bad = ~np.isclose(a, b, rtol=1e-12, atol=0.0, equal_nan=True)
        else:
            bad = ~((a == b) | (a.isna() & b.isna())).to_numpy()
        assert not bad.any(), (
            f"{what}.{col}: {int(bad.sum())} rows differ, e.g.\n{both.loc[bad, [key, f'{col}_spark', f'{col}_duckdb']].head()}"
        )


@pytest.mark.parametrize("role", ["eval", "serve"])
def test_spark_and_duckdb_aggregates_agree(tiny_raw, clean_build, role):
    cutoff = clean_build.cut.eval_start if role == "eval" else RUN_DATE
    con = duckdb_reference.connect(threads=2)
    duckdb_reference.register_clean_events(con, tiny_raw, RUN_DATE, CFG)
    assert duckdb_reference.duplicates_dropped(con) == clean_build.summary.duplicates_dropped

    ref_users = duckdb_reference.user_aggregates(con, cutoff, CFG.history_len).df()
    users = lc.read_frame(clean_build.lake, "user_features", RUN_DATE, role)
    vocab = lc.read_frame(clean_build.lake, "vocab", RUN_DATE)
    categories = dict(zip(*vocab[vocab["field"] == "category"][["idx", "value"]].T.to_numpy(), strict=True))
    users["top_category"] = users["top_category_idx"].map(categories)
    # Histories as tuples of item ids (the reference keys by raw id), compared as plain values.
    item_ids = dict(zip(*vocab[vocab["field"] == "item_id"][["idx", "value"]].T.to_numpy(), strict=True))
    users["history"] = [tuple(item_ids[i] for i in h) for h in users["history"]]
    ref_users["history"] = [tuple(h) for h in ref_users["history"]]
    assert sum(map(len, ref_users["history"])) > 0, "the tiny data must give some users a history"
    _assert_columns_equal(users[ref_users.columns], ref_users, "user_id", f"user_features[{role}]")

    ref_items = duckdb_reference.item_aggregates(con, cutoff, CFG.popularity_days).df()
    items = lc.read_frame(clean_build.lake, "item_features", RUN_DATE, role)
    _assert_columns_equal(items[ref_items.columns], ref_items, "item_id", f"item_features[{role}]")
