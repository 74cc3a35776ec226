"""The change rules: tonight's list figures against the median of past nights, in each figure's bad direction."""

from __future__ import annotations

import pytest

from nightrec.gate_settings import ChangeRule, ChangeSettings
from nightrec.validation.change_checks import change_checks

PAST = [
    {"coverage": 0.40, "gini": 0.50, "arp": 10.0, "fallback_share": 0.05, "replaced_share": 0.10},
    {"coverage": 0.60, "gini": 0.40, "arp": 12.0, "fallback_share": 0.07, "replaced_share": 0.20},
    {"coverage": 0.50, "gini": 0.45, "arp": 11.0, "fallback_share": 0.06, "replaced_share": 0.15},
]


def _by_name(checks):
    return {c.name: c for c in checks}


def test_bounds_are_the_median_moved_by_each_rule_in_its_bad_direction():
    checks, notes = change_checks(PAST[0] | {"coverage": 0.5}, PAST, ChangeSettings(), "learned")
    c = _by_name(checks)
    assert not notes and all(x.ok for x in checks)
    assert (
        c["change_coverage"].min_value == pytest.approx(0.5 * 0.5) and c["change_coverage"].max_value is None
    )
    assert c["change_gini"].max_value == pytest.approx(0.45 + 0.5 * (1 - 0.45))
    assert c["change_arp"].max_value == pytest.approx(11.0 * 2)
    assert c["change_fallback_share"].max_value == pytest.approx(0.06 + 0.2)
    assert c["change_replaced_share"].action == "warn"


def test_a_collapse_breaks_coverage_and_gini_and_says_value_baseline_and_threshold():
    tonight = {"coverage": 0.05, "gini": 0.75, "arp": 30.0, "fallback_share": 0.06}
    checks, _ = change_checks(tonight, PAST, ChangeSettings(), "learned")
    broken = {c.name: c for c in checks if not c.ok}
    assert set(broken) == {"change_coverage", "change_gini", "change_arp"}
    assert broken["change_gini"].explain == (
        "gini 0.75 tonight against a median of 0.45 over the last 3 successful night(s) of policy learned; "
        "allowed at most 0.725 (median + 50% of the room left to 1), action fail"
    )
    assert "allowed at least 0.25 (median - 50% of it)" in broken["change_coverage"].explain


def test_only_the_last_history_runs_count_and_a_first_night_only_notes():
    cfg = ChangeSettings(history_runs=1, gini=ChangeRule(limit=0.01))  # absolute
    checks, _ = change_checks({"gini": 0.505}, PAST, cfg)
    assert _by_name(checks)["change_gini"].max_value == pytest.approx(0.51)  # the newest night alone
    checks, notes = change_checks({"gini": 0.9, "coverage": 0.1}, [], cfg, "ease")
    assert checks == [] and len(notes) == 2 and "no successful night of policy ease" in notes[0]


def test_the_figures_against_a_published_snapshot_equal_the_figures_of_the_lists_side_by_side(tmp_path):
    """The recs gate's fast path (codes, one snapshot part at a time) against the plain accumulator."""
    from datetime import date

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from nightrec.evaluation.list_metrics import ListStats
    from nightrec.io.store import open_store
    from nightrec.publish import snapshot
    from nightrec.validation.list_figures import against_snapshot

    rng = np.random.default_rng(3)
    items = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(40)], "popularity": rng.integers(0, 50, 40).astype(float),
         "category": rng.integers(0, 4, 40)}
    )  # fmt: skip

    def lists(users, catalog) -> pd.DataFrame:
        rows = [
            (u, r + 1, it, "fallback" if u.endswith("7") else "model")
            for u in users
            for r, it in enumerate(rng.choice(catalog, 5, replace=False))
        ]
        out = pd.DataFrame(rows, columns=["user_id", "rank", "item_id", "source"])
        return out.assign(score=1.0 / out["rank"])

    catalog = list(items["item_id"]) + ["gone1", "gone2"]  # two items no longer in tonight's catalog
    live = lists([f"u{i}" for i in range(0, 120)], catalog)
    new = lists([f"u{i}" for i in range(20, 150)], list(items["item_id"]))
    folder = tmp_path / "live"
    folder.mkdir()
    pq.write_table(pa.Table.from_pandas(live, preserve_index=False), folder / "part-0.parquet")
    store = open_store(f"file://{tmp_path / 'store'}")
    manifest = snapshot.write_snapshot(
        folder, store, ds=date(2026, 11, 21), run_id="r", shard_count=4, meta={"top_k": 5}
    )
    fast = against_snapshot(items, 5, pa.Table.from_pandas(new, preserve_index=False), store, manifest, "k")
    plain_new, plain_live = ListStats(items, 5), ListStats(items, 5)
    plain_new.add(new, live)
    plain_live.add(live)
    assert fast.new.metrics() == pytest.approx(plain_new.metrics())
    assert fast.live.metrics() == pytest.approx(plain_live.metrics())
    got, want = fast.new.churn_frame().sort_index(), plain_new.churn_frame().sort_index()
    assert list(got.index) == list(want.index) and len(got) == 100  # u20..u119
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy())
