"""Scenario 3 (malformed CSV rows) and the non-UTC part of scenario 5, on CSV raw data."""

from __future__ import annotations

import shutil
from datetime import datetime

import pyarrow.parquet as pq
import pytest

from nightrec.data import synthetic
from nightrec.errors import GateFailed
from nightrec.io import raw
from nightrec.validation import gates, quarantine
from tests.conftest import make_settings
from tests.validation.conftest import RUN_DATE

GARBAGE = "this is not an event"


@pytest.fixture(scope="module")
def csv_raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("csv") / "raw"
    synthetic.generate(100, 60, 20, out, seed=5, events_per_user=20.0, fmt="csv")
    return out


@pytest.fixture
def planted(csv_raw, tmp_path):
    out = tmp_path / "raw"
    shutil.copytree(csv_raw, out)
    return out


def _append(raw_root, lines: list[str]) -> None:
    part = sorted((raw_root / "events").glob("*.csv"))[0]
    with part.open("a") as f:
        f.write("\n".join(lines) + "\n")


def test_few_malformed_lines_are_quarantined_counted_and_kept_out(spark, planted, tmp_path):
    s = make_settings(tmp_path / "home")
    _append(
        planted,
        [
            GARBAGE,
            "u_x,i_x,click,not-a-date,,s1",
            "u_x,i_x,click,2026-11-20T10:00:00Z,lots,s1",
            "u_tz,i_tz,click,2026-11-20T10:00:00+02:00,,s1",
            ",,,,,",  # a line of empty fields: no valid row, so quarantined (not a not-null failure of the table)
            "u_y,,click,2026-11-20T10:00:00Z,,s1",
        ],
    )
    report = gates.validate_raw(spark, planted, s, RUN_DATE)
    assert report.success, report.summary()
    folder = quarantine.quarantine_path(s.lake, RUN_DATE, "events")
    assert f"5 malformed events rows quarantined to {folder}" in report.notes
    q = pq.read_table(folder).to_pandas().sort_values("line")
    assert sorted(q["reason"]) == [
        "empty required field 'item_id'",
        "empty required field 'user_id'",
        "malformed line: expected 6 comma-separated fields",
        "unparsable double in column 'value'",
        "unparsable timestamp in column 'ts'",
    ]
    assert GARBAGE in set(q["line"]) and q["file"].str.endswith(".csv").all()
    assert report.stats["tables"]["events"]["malformed"] == 5

    events = raw.read_raw_table(spark, planted, "events")
    assert events.where(events.user_id == "u_x").count() == 0
    # An explicit offset is normalised to UTC on read.
    assert events.where(events.user_id == "u_tz").first()["ts"] == datetime(2026, 11, 20, 8, 0)


def test_too_many_malformed_lines_fail_with_sample_lines(spark, planted, tmp_path):
    s = make_settings(tmp_path / "home")
    _append(planted, [f"{GARBAGE} #{i}" for i in range(200)])
    report = gates.validate_raw(spark, planted, s, RUN_DATE)
    with pytest.raises(GateFailed) as e:
        report.raise_if_failed()
    msg = str(e.value)
    assert "[raw_checks] events_malformed_share of events (200 rows)" in msg
    assert "are malformed (quarantined); allowed at most 1.00%" in msg
    assert msg.count(GARBAGE) == 5 and ".csv" in msg
    # Each sample says where it is: the line number in its file, counting the header.
    part = sorted((planted / "events").glob("*.csv"))[0]
    first = part.read_text().splitlines().index(f"{GARBAGE} #0") + 1
    assert f"'line_number': '{first}'" in msg or f"'line_number': {first}" in msg, msg
