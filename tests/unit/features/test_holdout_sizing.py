"""The holdout grows with the data until enough users can be evaluated, and every stage reads the same split."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from nightrec.features import events as ev
from nightrec.settings import FeatureSettings

RUN = date(1998, 4, 23)


def _clean(spark, rows):
    return spark.createDataFrame(
        [(u, datetime.fromisoformat(t), w) for u, t, w in rows], "user_id string, ts timestamp, weight double"
    )


def test_candidates_go_a_week_at_a_time_up_to_the_maximum():
    assert ev.holdout_candidates(FeatureSettings(holdout_days=7, max_holdout_days=30)) == [7, 14, 21, 28, 30]
    assert ev.holdout_candidates(FeatureSettings(holdout_days=7, max_holdout_days=7)) == [7]


def test_the_shortest_holdout_with_enough_evaluable_users_is_chosen(spark):
    rows = [
        ("a", "1998-01-10 10:00:00", 1.0), ("a", "1998-04-20 10:00:00", 1.0),  # both sides of a week: evaluable
        ("b", "1998-01-10 10:00:00", 1.0), ("b", "1998-04-05 10:00:00", 1.0),  # needs 3 weeks (starts 04-02)
        ("c", "1998-04-21 10:00:00", 1.0),  # only inside: never evaluable
        ("d", "1998-01-10 10:00:00", 1.0), ("d", "1998-04-21 10:00:00", 0.0),  # a low rating is no engagement
        ("e", "1998-03-30 10:00:00", 1.0), ("e", "1998-04-12 10:00:00", 1.0),  # needs 2 weeks (starts 04-09)
    ]  # fmt: skip
    clean = _clean(spark, rows)
    cfg = FeatureSettings(holdout_days=7, valid_days=7, holdout_min_users=2, max_holdout_days=28)
    cut, counts = ev.choose_cutoffs(clean, RUN, cfg)
    assert counts == {7: 1, 14: 2, 21: 3, 28: 2}  # at 28 days e's first engagement is inside the holdout
    assert (
        cut.holdout_days == 14 and cut.eval_start == date(1998, 4, 9) and cut.valid_start == date(1998, 4, 2)
    )

    greedy = cfg.model_copy(update={"holdout_min_users": 10, "min_train_share": 0.0})
    assert ev.choose_cutoffs(clean, RUN, greedy)[0].holdout_days == 21  # never enough: the most users

    # 8 engaged events; a 14-day holdout leaves 4 before its validation window (04-02), 21 days leaves 3.
    thin = cfg.model_copy(update={"holdout_min_users": 3, "min_train_share": 0.5})
    assert ev.choose_cutoffs(clean, RUN, thin)[0].holdout_days == 14  # 21 would starve training
    fixed = cfg.model_copy(update={"holdout_min_users": 0})
    assert ev.choose_cutoffs(clean, RUN, fixed) == (ev.Cutoffs.for_run(RUN, fixed), {})


def test_every_stage_reads_the_split_the_feature_build_recorded(clean_build):
    from nightrec.io import lake
    from tests.unit.features.conftest import CFG, RUN_DATE

    marker = lake.read_marker(lake.partition_path(clean_build.lake, "vocab", RUN_DATE))
    recorded = marker["cutoffs"]["holdout_days"]
    assert ev.Cutoffs.of_night(clean_build.lake, RUN_DATE, CFG).holdout_days == recorded
    assert clean_build.summary.cutoffs["eval_start"] == str(clean_build.cut.eval_start)
    counts = {int(k): v for k, v in marker["cutoffs"]["evaluable_users"].items()}
    enough = [d for d in sorted(counts) if counts[d] >= CFG.holdout_min_users]
    assert recorded == (enough[0] if enough else max(counts))


@pytest.mark.parametrize("days", [None, 21])
def test_a_lake_without_a_record_falls_back_to_the_fixed_window(tmp_path, days):
    cfg = FeatureSettings(holdout_days=7, valid_days=7)
    assert ev.Cutoffs.of_night(tmp_path, RUN, cfg) == ev.Cutoffs.for_run(RUN, cfg)
    if days:
        assert ev.Cutoffs.for_run(RUN, cfg, days).holdout_days == days
