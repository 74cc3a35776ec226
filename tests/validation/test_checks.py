"""Aggregate checks without Spark: PSI, volume bounds, feature drift (scenario 8) and the run history."""

from __future__ import annotations

from datetime import date

import pytest

from nightrec.gate_settings import GateSettings, VolumeSettings
from nightrec.validation import checks, gates, history, runner


def test_psi_is_zero_for_identical_shapes_and_grows_with_the_shift():
    ref = {"a": 50, "b": 30, "c": 20}
    assert checks.psi({"a": 5, "b": 3, "c": 2}, ref) == pytest.approx(0.0)
    small = checks.psi({"a": 45, "b": 33, "c": 22}, ref)
    large = checks.psi({"a": 10, "b": 30, "c": 60}, ref)
    assert 0 < small < 0.1 < large


def test_volume_spike_warns_by_default_and_a_drop_fails():
    cfg = VolumeSettings()
    spike = {c.name: c for c in checks.volume_checks("events", 1000, [100] * 7, cfg, "events", "events")}
    assert not spike["events_high"].ok and spike["events_high"].action == "warn"
    assert spike["events_low"].ok
    drop = {c.name: c for c in checks.volume_checks("events", 10, [100] * 7, cfg, "events", "events")}
    assert not drop["events_low"].ok and drop["events_low"].action == "fail"
    assert "10 events, expected >= 50 (0.5 x 7-run median 100)" == drop["events_low"].explain


def _feature_stats(categories: dict, nulls: float = 0.03) -> dict:
    return {
        "rows": {"interactions": 1000},
        "vocab": {"user_id": 100, "item_id": 50, "category": 3},
        "days_since_last_null_rate": nulls,
        "examples_per_user": 5.0,
        "hist": {
            "engaged_category": categories,
            "user_activity": {"1": 10, "2": 20},
            "item_popularity": {"1": 5, "2": 5},
        },
    }


def test_feature_drift_and_null_jump_name_feature_metric_threshold_and_action(tmp_path):
    g = GateSettings()
    prev = _feature_stats({"1": 60, "2": 30, "3": 10})
    now = _feature_stats({"1": 10, "2": 30, "3": 60}, nulls=0.6)
    now["hist"]["user_activity"] = {"1": 28, "2": 2}
    now["vocab"] = {"user_id": 300, "item_id": 50, "category": 3}
    ctx = runner.get_context(str(tmp_path / "gx"), str(tmp_path / "docs"))
    res = checks.run_checks(ctx, "feature_checks", gates.feature_checks(now, [{"features": prev}], prev, g))
    assert not res.success
    failed = {f.rule: f for f in res.failures}
    assert "feature 'engaged_category': PSI" in failed["psi_engaged_category"].detail
    assert "(threshold 0.25, action fail)" in failed["psi_engaged_category"].detail
    assert "60.00% of serving users have no engaged event" in failed["days_since_last_null_rate"].detail
    warned = {w.rule: w for w in res.warnings}
    assert "action warn" in warned["psi_user_activity"].detail
    assert "200 of 300 rows (66.67%) are new users" in warned["new_users_share"].detail
    assert (tmp_path / "docs" / "index.html").exists()


def test_history_keeps_only_committed_runs_newest_first(tmp_path):
    lake = tmp_path / "lake"
    for d in (date(2026, 11, 1), date(2026, 11, 2)):
        history.save_pending(lake, d, "raw", {"n": d.day})
    history.commit(lake, date(2026, 11, 1))
    assert [h["raw"]["n"] for h in history.load(lake, date(2026, 11, 30), 7)] == [1]
    history.commit(lake, date(2026, 11, 2))
    assert [h["ds"] for h in history.load(lake, date(2026, 11, 30), 7)] == ["2026-11-02", "2026-11-01"]
    assert history.load(lake, date(2026, 11, 2), 7)[0]["ds"] == "2026-11-01"  # the run's own date excluded
