"""Idempotence and RELIABILITY scenario 11: skip on same inputs, refuse unmarked partitions, resume after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nightrec.errors import StageInputMissing
from nightrec.features import build
from nightrec.io import lake
from tests.unit.features import _lake_compare as lc
from tests.unit.features.conftest import CFG, RUN_DATE

pytestmark = pytest.mark.spark

ALL = [t.name for t in build.OUTPUTS]
BEFORE_USER_FEATURES = ["vocab", "interactions", "item_features"]


def _marker_times(lake_root: str, tables: list[str]) -> dict[str, str]:
    return {t: lake.read_marker(lake.partition_path(lake_root, t, RUN_DATE))["written_at"] for t in tables}


def _assert_equals_clean(lake_root: str, clean_lake: str) -> None:
    for table in ALL:
        lc.assert_same_frames(
            lc.read_frame(clean_lake, table, RUN_DATE), lc.read_frame(lake_root, table, RUN_DATE), table
        )


def test_rerun_with_the_same_inputs_skips_and_reports_the_marked_rows(spark, tiny_raw, clean_build):
    assert set(clean_build.summary.written) == set(ALL)
    # Each table's write is timed, and only the tables written (a reused build times nothing).
    assert set(clean_build.summary.seconds) == set(ALL)
    assert all(s >= 0 for s in clean_build.summary.seconds.values())
    assert clean_build.summary.duplicates_dropped > 0  # the synthetic data replays ~0.5% of its rows
    stamps = _marker_times(clean_build.lake, ALL)
    again = build.build_features(spark, tiny_raw, clean_build.lake, RUN_DATE, CFG)
    assert again.skipped and again.written == () and again.seconds == {}
    assert again.rows == clean_build.summary.rows
    assert again.duplicates_dropped == clean_build.summary.duplicates_dropped
    assert _marker_times(clean_build.lake, ALL) == stamps


def _assert_killed_state(lake_root: str, killed_table: str, done: list[str]) -> None:
    for t in done:
        assert lake.is_complete(lake_root, t, RUN_DATE), t
    part = lake.partition_path(lake_root, killed_table, RUN_DATE)
    assert any(part.rglob("*.parquet")), "the fault point sits after the data is in place"
    assert lake.read_marker(part) is None
    with pytest.raises(StageInputMissing, match="no completion marker"):
        lake.require_partition(lake_root, killed_table, RUN_DATE)


def test_failed_write_leaves_no_marker_and_rerun_completes_only_the_rest(
    spark, tiny_raw, clean_build, tmp_path, monkeypatch
):
    lake_root = str(tmp_path / "lake")
    monkeypatch.setenv(lake.FAULT_ENV, "features.during_write:raise:user_features")
    with pytest.raises(lake.InjectedFault):
        build.build_features(spark, tiny_raw, lake_root, RUN_DATE, CFG)
    _assert_killed_state(lake_root, "user_features", BEFORE_USER_FEATURES)
    with pytest.raises(StageInputMissing, match="does not exist"):
        lake.require_partition(lake_root, "ranking_examples", RUN_DATE)

    monkeypatch.delenv(lake.FAULT_ENV)
    stamps = _marker_times(lake_root, BEFORE_USER_FEATURES)
    resumed = build.build_features(spark, tiny_raw, lake_root, RUN_DATE, CFG)
    assert resumed.written == ("user_features", "retrieval_examples", "ranking_examples")
    assert tuple(resumed.seconds) == resumed.written
    assert _marker_times(lake_root, BEFORE_USER_FEATURES) == stamps
    assert resumed.rows == clean_build.summary.rows
    _assert_equals_clean(lake_root, clean_build.lake)


_KILLED_RUN = """
import sys
from datetime import date
from nightrec.features import build
from nightrec.io.spark import get_spark
from nightrec.settings import FeatureSettings, SparkSettings
spark = get_spark(SparkSettings(master="local[2]", driver_memory="1g", shuffle_partitions=2))
build.build_features(spark, sys.argv[1], sys.argv[2], date.fromisoformat(sys.argv[3]),
                     FeatureSettings(holdout_days={holdout}, valid_days={valid},
                     negatives_per_positive={neg}))
"""


@pytest.mark.slow
def test_sigkill_mid_write_then_rerun_equals_a_clean_run(spark, tiny_raw, clean_build, tmp_path):
    lake_root = str(tmp_path / "lake")
    env = {
        **os.environ,
        lake.FAULT_ENV: "features.during_write:kill:item_features",
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    code = textwrap.dedent(
        _KILLED_RUN.format(holdout=CFG.holdout_days, valid=CFG.valid_days, neg=CFG.negatives_per_positive)
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_raw), lake_root, RUN_DATE.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    _assert_killed_state(lake_root, "item_features", ["vocab", "interactions"])

    resumed = build.build_features(spark, tiny_raw, lake_root, RUN_DATE, CFG)
    assert resumed.written == ("item_features", "user_features", "retrieval_examples", "ranking_examples")
    _assert_equals_clean(lake_root, clean_build.lake)
