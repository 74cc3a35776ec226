"""The windowed user and item feature columns on hand-built frames, against hand-computed values."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from nightrec.features import point_in_time

pytestmark = pytest.mark.spark

CUT = date(2026, 1, 31)


def _inter(spark, rows):
    return spark.createDataFrame(
        rows, "user_id string, item_id string, item_idx int, event_type string, ts timestamp, weight double"
    )


ROWS = [
    ("u1", "a", 1, "impression", datetime(2026, 1, 30, 12), 0.0),  # 1 day window
    ("u1", "a", 1, "click", datetime(2026, 1, 30, 12, 1), 1.0),
    ("u1", "b", 2, "purchase", datetime(2026, 1, 27), 3.0),  # 7 day window
    ("u1", "c", 3, "click", datetime(2026, 1, 10), 1.0),  # 30 day window only
    ("u1", "c", 3, "click", datetime(2025, 12, 1), 1.0),  # outside every window, still history
    ("u1", "a", 1, "purchase", datetime(2026, 1, 31), 3.0),  # at the cutoff: the future
    ("u2", "a", 1, "impression", datetime(2026, 1, 29), 0.0),  # impressions only
    ("u2", "b", 2, "impression", datetime(2026, 1, 29), 0.0),
]


def test_user_counts_by_type_and_window_affinity_and_mean_price(spark):
    users = spark.createDataFrame([("u1", None)], "user_id string, attributes map<string,string>")
    cats = spark.createDataFrame([(1, 10), (2, 10), (3, 20)], "item_idx int, category_idx int")
    prices = spark.createDataFrame([(1, 10.0), (2, 30.0), (3, None)], "item_idx int, price double")
    empty_map = spark.createDataFrame([], "user_id string, user_idx int")
    seg = spark.createDataFrame([], "segment string, segment_idx int")
    out = {
        r.user_id: r
        for r in point_in_time.build_user_features(
            _inter(spark, ROWS), users, empty_map, seg, cats, CUT, 5, "eval", prices
        ).collect()
    }
    u1 = out["u1"]
    assert (u1.n_click_1d, u1.n_click_7d, u1.n_click_30d) == (1, 1, 2)
    assert (u1.n_purchase_1d, u1.n_purchase_7d, u1.n_purchase_30d) == (0, 1, 1)
    assert (u1.n_impression_1d, u1.n_view_30d, u1.n_rating_30d) == (1, 0, 0)
    assert u1.n_events == 4 and u1.history == [1, 2, 3, 3]
    # Category 10 has weight 1 + 3, category 20 has 1 + 1.
    assert u1.top_category_idx == 10 and u1.top_category_share == pytest.approx(4 / 6)
    assert u1.top3_category_share == pytest.approx(1.0)
    assert u1.mean_price == pytest.approx((10.0 + 30.0) / 2)  # the unpriced item is left out
    assert u1.days_since_last == pytest.approx(0.5 - 60 / 86400)
    u2 = out["u2"]  # known through impressions alone
    assert u2.n_impression_7d == 2 and u2.n_events == 0 and u2.days_since_last is None
    assert u2.top_category_share is None and u2.mean_price is None


def test_item_popularity_windows_trend_ctr_and_age(spark):
    items = spark.createDataFrame(
        [
            ("a", "x", ["t1"], 5.0, True, datetime(2026, 1, 1)),
            ("b", "x", None, 9.0, True, datetime(2026, 2, 15)),  # created after the cutoff
            ("c", "y", None, None, False, None),
        ],
        "item_id string, category string, tags array<string>, price double, available boolean, created_at timestamp",
    )
    item_map = spark.createDataFrame([("a", 1), ("b", 2), ("c", 3)], "item_id string, item_idx int")
    cat_map = spark.createDataFrame([("x", 1), ("y", 2)], "category string, category_idx int")
    out = {
        r.item_id: r
        for r in point_in_time.build_item_features(
            _inter(spark, ROWS), items, item_map, cat_map, CUT, 30, "serve"
        ).collect()
    }
    a, b, c = out["a"], out["b"], out["c"]
    assert (a.popularity_1d, a.popularity_7d, a.popularity_30d, a.popularity) == (1.0, 1.0, 1.0, 1.0)
    assert (b.popularity_1d, b.popularity_7d, b.popularity_30d) == (0.0, 3.0, 3.0)
    assert (c.popularity_7d, c.popularity_30d) == (0.0, 1.0)
    assert a.trend_7d_30d == pytest.approx(30 / 7) and c.trend_7d_30d == 0.0
    # Catalog rate in the 30 days: 2 clicks (a, c) over 3 impressions (a twice, b); the December click is out.
    assert (a.impressions_30d, a.clicks_30d, c.impressions_30d, c.clicks_30d) == (2, 1, 0, 1)
    prior = 2 / 3
    assert a.ctr_smoothed == pytest.approx((1 + 20 * prior) / (2 + 20))
    assert b.ctr_smoothed == pytest.approx((0 + 20 * prior) / (1 + 20))
    assert a.age_days == pytest.approx(30.0) and b.age_days is None and c.age_days is None
    assert a.tags == ["t1"] and a.price_bucket == 1 and c.price_bucket == 0
