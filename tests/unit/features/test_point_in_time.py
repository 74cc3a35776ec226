"""Leakage: editing events after a cutoff leaves everything computed as of that cutoff identical.

Events are added, removed and changed (type and item) at or after the training cutoff (``eval_start``): the
training side (user vocabulary, eval-role features, examples) must not move by a single row. Then the same at
or after the run date: nothing at all may move.
"""

from __future__ import annotations

import pytest

from nightrec.features import build
from tests.unit.features import _lake_compare as lc
from tests.unit.features.conftest import CFG, RUN_DATE, lake_copy

pytestmark = pytest.mark.spark


def test_training_outputs_ignore_events_after_the_training_cutoff(spark, tiny_raw, clean_build, tmp_path):
    raw = lc.copy_raw(tiny_raw, tmp_path / "raw")
    edits = lc.edit_events_from(raw, clean_build.cut.eval_start, seed=1)
    assert min(edits.values()) > 0, edits
    # Rebuilt over a copy of the clean lake without force: the changed input fingerprint must make every
    # table recompute (nothing stale is kept). The holdout's length is chosen from the data, events inside it
    # included (features.events.choose_cutoffs); the property is about a given split, so the rebuild pins
    # the one the clean build chose.
    lake_root = lake_copy(clean_build.lake, tmp_path / "lake")
    pinned = CFG.model_copy(update={"holdout_days": clean_build.cut.holdout_days, "holdout_min_users": 0})
    summary = build.build_features(spark, raw, lake_root, RUN_DATE, pinned)
    assert not summary.skipped and summary.fingerprint != clean_build.summary.fingerprint
    assert set(summary.written) == {t.name for t in build.OUTPUTS}

    lc.assert_same_frames(
        lc.vocab_users(clean_build.lake, RUN_DATE), lc.vocab_users(lake_root, RUN_DATE), "user vocabulary"
    )
    for table, rows in lc.TRAINING_SIDE.items():
        lc.assert_same_frames(
            lc.read_frame(clean_build.lake, table, RUN_DATE, rows),
            lc.read_frame(lake_root, table, RUN_DATE, rows),
            f"{table} ({rows})",
        )
    # The edits did reach what may see them: otherwise this test would prove nothing.
    for table, rows in (("user_features", "serve"), ("retrieval_examples", ("split", ("holdout",)))):
        before = lc.read_frame(clean_build.lake, table, RUN_DATE, rows)
        after = lc.read_frame(lake_root, table, RUN_DATE, rows)
        assert len(before) and not before.equals(after), table


@pytest.mark.slow
def test_no_output_sees_events_on_or_after_the_run_date(spark, tiny_raw, clean_build, tmp_path):
    raw = lc.copy_raw(tiny_raw, tmp_path / "raw")
    edits = lc.edit_events_from(raw, RUN_DATE, seed=2)
    assert min(edits.values()) > 0, edits
    lake_root = str(tmp_path / "lake")
    build.build_features(spark, raw, lake_root, RUN_DATE, CFG, force=True)
    for table in (t.name for t in build.OUTPUTS):
        lc.assert_same_frames(
            lc.read_frame(clean_build.lake, table, RUN_DATE), lc.read_frame(lake_root, table, RUN_DATE), table
        )
