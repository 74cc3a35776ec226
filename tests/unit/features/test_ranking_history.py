"""Ranking examples carry the user's history as of the start of their day (no leakage from that day on)."""

from __future__ import annotations

from datetime import datetime

from nightrec.features.examples import _history_before_day


def test_history_before_day_uses_only_earlier_events_newest_first(spark):
    engaged = spark.createDataFrame(
        [
            ("u", 1, datetime(2026, 11, 1, 10)),
            ("u", 2, datetime(2026, 11, 1, 12)),
            ("u", 3, datetime(2026, 11, 2, 0)),  # exactly midnight: belongs to Nov 2, not before it
            ("u", 4, datetime(2026, 11, 2, 9)),
            ("u", 0, datetime(2026, 11, 2, 10)),  # OOV item: never in a history
            ("v", 7, datetime(2026, 11, 3, 8)),
        ],
        "user_id string, item_idx int, ts timestamp",
    )
    days = spark.createDataFrame(
        [("u", "2026-11-01"), ("u", "2026-11-02"), ("u", "2026-11-05"), ("v", "2026-11-03")],
        "user_id string, day string",
    ).selectExpr("user_id", "to_date(day) AS day")
    got = {
        (r.user_id, r.day.isoformat()): r.history
        for r in _history_before_day(engaged, days, history_len=2).collect()
    }
    assert got == {
        ("u", "2026-11-01"): [],
        ("u", "2026-11-02"): [2, 1],
        ("u", "2026-11-05"): [4, 3],  # the last two only
        ("v", "2026-11-03"): [],
    }
