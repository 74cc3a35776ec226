"""Feature steps on hand-built frames: cleaning, weights, stable vocabularies, point-in-time history."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from nightrec.features import events as ev
from nightrec.features import point_in_time, vocab
from nightrec.settings import FeatureSettings

pytestmark = pytest.mark.spark


def _events(spark, rows):
    return spark.createDataFrame(
        rows, "user_id string, item_id string, event_type string, ts timestamp, value double"
    )


def test_clean_events_drops_future_replays_unknown_items_and_types(spark):
    rows = [
        ("u1", "a", "click", datetime(2026, 1, 1, 10), None),
        ("u1", "a", "click", datetime(2026, 1, 1, 10), None),  # exact replay
        ("u1", "b", "purchase", datetime(2026, 1, 2), 9.0),
        ("u1", "zzz", "click", datetime(2026, 1, 2), None),  # item unknown to the catalog
        ("u1", "a", "teleport", datetime(2026, 1, 2), None),  # unknown event type
        ("u1", "a", "click", datetime(2026, 1, 5), None),  # on the run date: the future
        ("u2", "a", "rating", datetime(2026, 1, 3), 2.0),  # low rating weighs 0
        ("u2", "b", "impression", datetime(2026, 1, 3), None),
    ]
    items = spark.createDataFrame([("a",), ("b",)], "item_id string")
    # "gone" has an index (the vocabulary keeps items that left the catalog) but is not in the catalog.
    item_map = spark.createDataFrame([("a", 1), ("b", 2), ("gone", 3)], "item_id string, item_idx int")
    catalog = ev.catalog_index(items, item_map)
    rows.append(("u1", "gone", "click", datetime(2026, 1, 2), None))
    out = ev.clean_events(_events(spark, rows), catalog, date(2026, 1, 5), FeatureSettings())
    assert "item_id" not in out.columns, "items are indexed before the shuffle"
    got = sorted((r.user_id, r.item_idx, r.event_type, r.weight) for r in out.collect())
    assert got == [
        ("u1", 1, "click", 1.0),
        ("u1", 2, "purchase", 3.0),
        ("u2", 1, "rating", 0.0),
        ("u2", 2, "impression", 0.0),
    ]


def test_vocab_keeps_old_indices_and_appends_new_values_sorted(spark):
    first = vocab.extend_vocab(None, spark.createDataFrame([("b",), ("a",)], "value string"), "item_id")
    assert sorted((r.value, r.idx) for r in first.collect()) == [("a", 1), ("b", 2)]
    second = vocab.extend_vocab(
        first, spark.createDataFrame([("c",), ("0",), ("a",)], "value string"), "item_id"
    )
    assert sorted((r.value, r.idx) for r in second.collect()) == [("0", 3), ("a", 1), ("b", 2), ("c", 4)]


def test_user_history_uses_only_events_before_the_cutoff_most_recent_first(spark):
    inter = spark.createDataFrame(
        [
            ("u1", 1, datetime(2026, 1, 1), 1.0),
            ("u1", 2, datetime(2026, 1, 2), 1.0),
            ("u1", 3, datetime(2026, 1, 3), 0.0),  # impression: not history
            ("u1", 4, datetime(2026, 1, 10), 1.0),  # after the cutoff
        ],
        "user_id string, item_idx int, ts timestamp, weight double",
    )
    users = spark.createDataFrame(
        [("u1", {"segment": "s"}), ("u9", None)], "user_id string, attributes map<string,string>"
    )
    user_map = spark.createDataFrame([("u1", 7)], "user_id string, user_idx int")
    seg = spark.createDataFrame([("s", 1)], "segment string, segment_idx int")
    cats = spark.createDataFrame([(1, 5), (2, 6), (4, 6)], "item_idx int, category_idx int")
    out = {
        r.user_id: r
        for r in point_in_time.build_user_features(
            inter, users, user_map, seg, cats, date(2026, 1, 5), 10, "eval"
        ).collect()
    }
    assert out["u1"].history == [2, 1]
    assert out["u1"].n_events == 2 and out["u1"].user_idx == 7 and out["u1"].segment_idx == 1
    assert out["u1"].days_since_last == pytest.approx(3.0)
    assert out["u9"].history == [] and out["u9"].n_events == 0 and out["u9"].user_idx == 0
