"""The ranking examples' days kept across nights: a night builds only the days it has not seen, and its
examples equal a full rebuild's, row for row, also after an old day's events change."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow.dataset as pads
import pytest

from nightrec.features import build, ranking_days
from nightrec.features.events import Cutoffs
from tests.unit.features import _lake_compare as lc
from tests.unit.features.conftest import CFG, RUN_DATE, lake_copy

pytestmark = pytest.mark.spark

NIGHT1 = RUN_DATE - timedelta(days=1)
# The split pinned (the holdout's length is otherwise chosen from the data each night), so night 2's window
# moves by exactly the one day.
PINNED = CFG.model_copy(update={"holdout_min_users": 0})


def _event_days(lake_root: str, start, end) -> int:
    t = pads.dataset(str(lake_root) + f"/interactions/ds={RUN_DATE.isoformat()}", format="parquet").to_table(
        columns=["ts"]
    )
    days = pd.Series(t.column("ts").to_pandas()).dt.date
    return int(days[(days >= start) & (days < end)].nunique())


def _forced_copy(spark, raw, lake_root: str, dst: Path) -> str:
    """Night 2 rebuilt from scratch over a copy of the lake: every day of the ranking examples recomputed."""
    forced = lake_copy(lake_root, dst)
    summary = build.build_features(spark, raw, forced, RUN_DATE, PINNED, force=True)
    assert summary.ranking_days["built"] == summary.ranking_days["days"]
    return forced


def test_the_next_night_builds_only_its_new_day_and_equals_a_full_rebuild(spark, tiny_raw, tmp_path):
    lake_root = str(tmp_path / "lake")
    first = build.build_features(spark, tiny_raw, lake_root, NIGHT1, PINNED)
    assert first.ranking_days["built"] == first.ranking_days["days"] > 10
    second = build.build_features(spark, tiny_raw, lake_root, RUN_DATE, PINNED)
    cut1, cut2 = (Cutoffs.of_night(lake_root, d, PINNED) for d in (NIGHT1, RUN_DATE))
    assert cut2.eval_start == cut1.eval_start + timedelta(days=1)
    new_days = _event_days(lake_root, cut1.eval_start, cut2.eval_start)
    assert new_days == 1
    assert second.ranking_days == {"days": first.ranking_days["days"] + new_days, "built": new_days}

    forced = _forced_copy(spark, tiny_raw, lake_root, tmp_path / "forced")
    lc.assert_same_frames(
        lc.read_frame(forced, "ranking_examples", RUN_DATE),
        lc.read_frame(lake_root, "ranking_examples", RUN_DATE),
        "ranking examples: kept days + one built vs all rebuilt",
    )


def test_a_changed_old_day_rebuilds_it_and_every_day_after(spark, tiny_raw, tmp_path):
    lake_root = str(tmp_path / "lake")
    build.build_features(spark, tiny_raw, lake_root, NIGHT1, PINNED)
    cut = Cutoffs.of_night(lake_root, NIGHT1, PINNED)
    # Late-arriving and corrected events from a week before night 1's evaluation window on.
    changed_from = cut.eval_start - timedelta(days=7)
    raw = lc.copy_raw(tiny_raw, tmp_path / "raw")
    assert min(lc.edit_events_from(raw, changed_from, seed=4).values()) > 0
    second = build.build_features(spark, raw, lake_root, RUN_DATE, PINNED)
    cut2 = Cutoffs.of_night(lake_root, RUN_DATE, PINNED)
    rebuilt = _event_days(lake_root, changed_from, cut2.eval_start)
    assert 0 < second.ranking_days["built"] == rebuilt < second.ranking_days["days"]

    forced = _forced_copy(spark, raw, lake_root, tmp_path / "forced")
    lc.assert_same_frames(
        lc.read_frame(forced, "ranking_examples", RUN_DATE),
        lc.read_frame(lake_root, "ranking_examples", RUN_DATE),
        "ranking examples after an old day changed",
    )


def test_a_killed_day_write_is_rebuilt_and_a_kept_day_is_never_replaced(
    spark, tiny_raw, clean_build, tmp_path
):
    lake_root = lake_copy(clean_build.lake, tmp_path / "lake")
    folders = sorted(p for p in (Path(lake_root) / ranking_days.ROOT).iterdir() if not p.name.startswith("_"))
    assert len(folders) == clean_build.summary.ranking_days["days"]
    killed, kept = folders[3], folders[5]
    (killed / "_MARKER.json").unlink()  # the write died between the swap and the marker
    kept_files = {f.name: f.stat().st_mtime_ns for f in kept.iterdir()}
    for t in build.OUTPUTS[-1:]:  # only the ranking examples are rebuilt
        (Path(lake_root) / t.name / f"ds={RUN_DATE.isoformat()}" / "_MARKER.json").unlink()
    summary = build.build_features(spark, tiny_raw, lake_root, RUN_DATE, CFG)
    assert summary.written == ("ranking_examples",)
    assert summary.ranking_days["built"] == 1
    assert {f.name: f.stat().st_mtime_ns for f in kept.iterdir()} == kept_files
    lc.assert_same_frames(
        lc.read_frame(clean_build.lake, "ranking_examples", RUN_DATE),
        lc.read_frame(lake_root, "ranking_examples", RUN_DATE),
        "ranking examples after a killed day write",
    )


def test_negatives_are_items_engaged_that_day_and_never_the_users_own(clean_build):
    base = pads.dataset(
        str(Path(clean_build.lake) / ranking_days.ROOT), format="parquet", exclude_invalid_files=True
    ).to_table()
    df = base.to_pandas()
    inter = (
        pads.dataset(
            str(Path(clean_build.lake) / "interactions" / f"ds={RUN_DATE.isoformat()}"), format="parquet"
        )
        .to_table(columns=["user_id", "item_idx", "ts", "weight"])
        .to_pandas()
    )
    inter["day"] = inter["ts"].dt.date
    shown = set(zip(inter["user_id"], inter["day"], inter["item_idx"], strict=True))
    pos, neg = df[df["label"] > 0], df[df["label"] == 0]
    engaged_that_day = set(zip(pos["day"], pos["item_idx"], strict=True))
    drawn = neg[[k not in shown for k in zip(neg["user_id"], neg["day"], neg["item_idx"], strict=True)]]
    # A negative that is not one of the user's own pairs was drawn: from the items engaged that day only.
    assert all((d, i) in engaged_that_day for d, i in zip(drawn["day"], drawn["item_idx"], strict=True))
    assert len(pos) < len(drawn) <= CFG.negatives_per_positive * len(pos)  # less the user's own draws
    # A draw of an item the user engaged that day was dropped: no pair is both a positive and a negative.
    keys = {(u, d, i) for u, d, i in zip(pos["user_id"], pos["day"], pos["item_idx"], strict=True)}
    assert not any(k in keys for k in zip(neg["user_id"], neg["day"], neg["item_idx"], strict=True))


def test_by_default_no_negatives_are_drawn_and_every_row_is_one_of_the_users_own_pairs(spark, clean_build):
    from nightrec.features import examples
    from nightrec.settings import FeatureSettings

    default = FeatureSettings()
    assert default.negatives_per_positive == 0
    interactions = spark.read.parquet(
        str(Path(clean_build.lake) / "interactions" / f"ds={RUN_DATE.isoformat()}")
    )
    rows = examples.ranking_base(
        interactions, clean_build.cut, default.negatives_per_positive, default.seed, default.history_len
    ).toPandas()
    drawn = examples.ranking_base(
        interactions, clean_build.cut, 2, default.seed, default.history_len
    ).toPandas()
    inter = interactions.select("user_id", "item_idx", "ts").toPandas()
    shown = set(zip(inter["user_id"], inter["ts"].dt.date, inter["item_idx"], strict=True))
    keys = list(zip(rows["user_id"], rows["day"], rows["item_idx"], strict=True))
    assert len(keys) == len(set(keys)) and set(keys) <= shown  # one row per pair, every one the user's own
    assert (rows["label"] == 0).any()  # shown without engagement stays a labelled negative
    # The drawn rows are exactly what the default leaves out.
    assert len(drawn) > len(rows) and len(drawn[drawn["label"] > 0]) == len(rows[rows["label"] > 0])
