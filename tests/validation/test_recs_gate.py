"""Scenarios 9 and 10 at the recommendations gate, on a hand-built lake of a few rows."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec.errors import GateFailed
from nightrec.io import lake
from nightrec.validation import gates, history
from schemas.arrow import to_arrow_schema
from schemas.tables import INTERACTIONS, ITEM_FEATURES, RECS, USER_FEATURES
from tests.conftest import make_settings
from tests.validation.conftest import RUN_DATE

ITEMS = ["a", "b", "c", "d", "e", "f"]


def _write(settings, table, rows: dict, role: str | None = None) -> None:
    schema = to_arrow_schema(table)
    if role:
        schema = pa.schema([f for f in schema if f.name != "role"])
    path = lake.partition_path(settings.lake, table.name, RUN_DATE)
    folder = path / f"role={role}" if role else path
    folder.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(rows.values())))
    # Columns the test does not care about: null where allowed, else zero (the contract grows over time).
    for f in schema:
        if f.name not in rows:
            numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
            rows[f.name] = pa.array([0] * n, f.type) if numeric and not f.nullable else pa.nulls(n, f.type)
    pq.write_table(pa.table(rows, schema=schema), folder / "part-0.parquet")
    lake.write_marker(path, "fp", table=table.name, rows=len(next(iter(rows.values()))))


def _lake(
    settings,
    recs: dict,
    available: list[bool] | None = None,
    oov: str | None = None,
    recent: list[float] | None = None,
) -> None:
    n = len(ITEMS)
    _write(
        settings,
        USER_FEATURES,
        {"user_id": ["u1", "u2"], "user_idx": [1, 2], "segment_idx": [0, 0], "history": [[1], [1, 2]],
         "n_events": [1, 4], "days_since_last": [1.0, 1.0], "top_category_idx": [1, 1]},
        role="serve",
    )  # fmt: skip
    _write(
        settings,
        ITEM_FEATURES,
        {"item_id": ITEMS, "item_idx": [0 if i == oov else k + 1 for k, i in enumerate(ITEMS)],
         "category_idx": [1] * n, "price_bucket": [0] * n, "popularity": [1.0] * n, "pop_bucket": [1] * n,
         "available": available or [True] * n, "popularity_7d": recent or [0.0] * n},
        role="serve",
    )  # fmt: skip
    seen = [("u1", "a"), ("u2", "a"), ("u2", "b"), ("u2", "c"), ("u2", "d")]
    _write(
        settings,
        INTERACTIONS,
        {"user_id": [u for u, _ in seen], "item_id": [i for _, i in seen], "user_idx": [1] * 5,
         "item_idx": [1] * 5, "event_type": ["click"] * 5, "ts": [datetime(2026, 11, 20)] * 5,
         "weight": [1.0] * 5},
    )  # fmt: skip
    rows = [(u, r + 1, i) for u, items in recs.items() for r, i in enumerate(items)]
    _write(
        settings,
        RECS,
        {"user_id": [u for u, _, _ in rows], "rank": [r for _, r, _ in rows], "item_id": [i for _, _, i in rows],
         "score": [1.0 / r for _, r, _ in rows], "source": ["model"] * len(rows)},
    )  # fmt: skip


@pytest.fixture
def s(tmp_path):
    settings = make_settings(tmp_path / "home")
    settings.scoring.top_k = 3
    return settings


def test_short_list_only_where_fewer_items_are_recommendable_and_history_committed(s):
    # u2 has seen 4 of 6 items: two is all it can get (the documented exception to "exactly K").
    history.save_pending(s.lake, RUN_DATE, "raw", {"tables": {}})
    _lake(s, {"u1": ["b", "c", "d"], "u2": ["e", "f"]})
    report = gates.validate_recs(s, RUN_DATE)
    assert report.success, report.summary()
    assert report.stats["fallback_users"] == 0 and report.stats["coverage"] == pytest.approx(5 / 6)
    assert set(history.load(s.lake, date_after(RUN_DATE), 7)[0]) >= {"raw", "recs"}


def date_after(d):
    from datetime import timedelta

    return d + timedelta(days=1)


def test_short_list_without_reason_and_oov_item_fail_naming_users(s):
    # Scenario 10: an item unknown to the models (item_idx 0) must never be recommended.
    _lake(s, {"u1": ["b", "c"], "u2": ["e", "f"]}, oov="f")
    with pytest.raises(GateFailed) as e:
        gates.validate_recs(s, RUN_DATE).raise_if_failed()
    msg = str(e.value)
    assert "[recs_audit] expect_column_values_to_be_between column 'n_short' of recs (1 rows)" in msg
    assert "column 'n_oov_items' of recs (1 rows)" in msg
    assert "{'n_short': 1, 'user_id': 'u1'}" in msg and "{'n_oov_items': 1, 'user_id': 'u2'}" in msg
    assert "Data Docs:" in msg and str(lake.partition_path(s.lake, RECS.name, RUN_DATE)) in msg
    assert history.load(s.lake, date_after(RUN_DATE), 7) == []


def test_all_items_unavailable_gives_empty_lists_and_fails(s):
    # Scenario 9: nothing recommendable -> empty lists; "fewer than K" never means none.
    _lake(s, {}, available=[False] * len(ITEMS))
    with pytest.raises(GateFailed) as e:
        gates.validate_recs(s, RUN_DATE).raise_if_failed()
    msg = str(e.value)
    assert "column 'n_recs' of recs (2 rows)" in msg
    assert "catalog_coverage column 'item_id' of recs" in msg and "out of 0 recommendable" in msg


def test_coverage_floor_follows_the_engaged_head_where_recent_engagement_is_concentrated(s):
    # Lists over 3 of 6 items. Asked for 90% of the catalog, they pass only because the last week's
    # engagement sat on e and f: half of that 2-item head is the floor.
    s.gates.min_catalog_coverage = 0.9
    lists = {"u1": ["e", "f", "b"], "u2": ["e", "f"]}
    _lake(s, lists, recent=[0.0, 1.0, 0.0, 0.0, 10.0, 10.0])
    report = gates.validate_recs(s, RUN_DATE)
    assert report.success, report.summary()
    assert gates.recs_audit(s, RUN_DATE)[3] == 2
    floor, why = gates.coverage_floor(s, 6, 2)
    assert floor == pytest.approx(1 / 6) and "the 2 items that carry 80%" in why


def test_coverage_floor_stays_the_catalog_share_where_engagement_is_spread(s):
    s.gates.min_catalog_coverage = 0.9
    s.gates.coverage_head.min_coverage = 1.0
    _lake(s, {"u1": ["e", "f", "b"], "u2": ["e", "f"]}, recent=[1.0] * len(ITEMS))
    with pytest.raises(GateFailed) as e:
        gates.validate_recs(s, RUN_DATE).raise_if_failed()
    msg = str(e.value)
    assert "3 distinct items recommended out of 6 recommendable (50.00%)" in msg
    assert "required >= 83.33% (1 x the 5 items that carry 80% of the last 7 days' engagement" in msg
    # Engagement on unavailable items does not make a head: then the catalog share holds.
    _lake(s, {"u1": ["b"]}, available=[True] * 4 + [False] * 2, recent=[0.0] * 4 + [10.0] * 2)
    _, _, n_allowed, head = gates.recs_audit(s, RUN_DATE)
    assert gates.coverage_floor(s, n_allowed, head) == (0.9, "90% of the catalog")


def test_membership_in_sorted_codes_matches_isin():
    rng = np.random.default_rng(1)
    ascending = np.unique(rng.integers(0, 1000, 400))
    values = np.concatenate([rng.integers(-5, 1100, 500), [-1, 999, 1000, 5000]])
    assert (gates._in_sorted(values, ascending) == np.isin(values, ascending)).all()
    assert not gates._in_sorted(values, ascending[:0]).any()
