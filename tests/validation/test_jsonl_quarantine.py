"""Malformed JSON Lines rows are quarantined and counted like malformed CSV rows (scenario 3 on JSON Lines)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime

import pyarrow.parquet as pq
import pytest

from nightrec.data import synthetic
from nightrec.errors import GateFailed
from nightrec.io import raw
from nightrec.validation import gates, quarantine
from schemas.tables import RAW_TABLES
from tests.conftest import make_settings
from tests.validation.conftest import RUN_DATE

GARBAGE = "this is not an event"
_ARGS = dict(n_users=100, n_items=60, n_days=20, seed=5, events_per_user=20.0)


def _event(**kw) -> str:
    row = {"user_id": "u_x", "item_id": "i_x", "event_type": "click", "ts": "2026-11-20T10:00:00Z"}
    return json.dumps(row | {"value": None, "session_id": "s1"} | kw)


@pytest.fixture(scope="module")
def jsonl_raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("jsonl") / "raw"
    synthetic.generate(out=out, fmt="jsonl", **_ARGS)
    return out


@pytest.fixture
def planted(jsonl_raw, tmp_path):
    out = tmp_path / "raw"
    shutil.copytree(jsonl_raw, out)
    return out


def _append(raw_root, lines: list[str], table: str = "events") -> None:
    part = sorted((raw_root / table).glob("*.jsonl"))[0]
    with part.open("a") as f:
        f.write("\n".join(lines) + "\n")


def test_few_malformed_lines_are_quarantined_counted_and_kept_out(spark, planted, tmp_path):
    s = make_settings(tmp_path / "home")
    _append(
        planted,
        [
            GARBAGE,
            _event(ts="not-a-date"),
            _event(value="lots"),
            _event(user_id="u_tz", ts="2026-11-20T10:00:00+02:00"),
        ],
    )
    report = gates.validate_raw(spark, planted, s, RUN_DATE)
    assert report.success, report.summary()
    folder = quarantine.quarantine_path(s.lake, RUN_DATE, "events")
    assert f"3 malformed events rows quarantined to {folder}" in report.notes
    q = pq.read_table(folder).to_pandas().sort_values("line")
    assert sorted(q["reason"]) == [
        "malformed line: expected one JSON object",
        "unparsable double in column 'value'",
        "unparsable timestamp in column 'ts'",
    ]
    assert GARBAGE in set(q["line"]) and q["file"].str.endswith(".jsonl").all()
    assert report.stats["tables"]["events"]["malformed"] == 3

    events = raw.read_raw_table(spark, planted, "events")
    assert events.where(events.user_id == "u_x").count() == 0
    # An explicit offset is normalised to UTC on read.
    assert events.where(events.user_id == "u_tz").first()["ts"] == datetime(2026, 11, 20, 8, 0)


def test_values_of_the_wrong_json_type_name_their_column(spark, planted):
    item = {"item_id": "i_bad", "category": "c", "price": 1.0, "available": True, "created_at": None}
    _append(
        planted,
        [
            json.dumps(item | {"tags": "a|b", "attributes": {}}),  # a string where an array belongs
            json.dumps(item | {"tags": [], "attributes": "x"}),  # a string where an object belongs
            json.dumps(item | {"tags": [], "attributes": {}, "available": "yes"}),
            '{"item_id": "i_cut", "category": "c", "pri',  # truncated line
        ],
        table="items",
    )
    checked = raw.read_raw_checked(spark, planted, "items")
    bad = {r[raw.LINE]: r[raw.REASON] for r in checked.where(checked[raw.REASON].isNotNull()).collect()}
    assert sorted(bad.values()) == [
        "malformed line: expected one JSON object",
        "unparsable array<string> in column 'tags'",
        "unparsable bool in column 'available'",
        "unparsable map<string,string> in column 'attributes'",
    ]
    assert checked.where(checked[raw.REASON].isNull()).count() == _ARGS["n_items"]


def test_too_many_malformed_lines_fail_with_sample_lines(spark, planted, tmp_path):
    s = make_settings(tmp_path / "home")
    _append(planted, [f"{GARBAGE} #{i}" for i in range(200)])
    report = gates.validate_raw(spark, planted, s, RUN_DATE)
    with pytest.raises(GateFailed) as e:
        report.raise_if_failed()
    msg = str(e.value)
    assert "[raw_checks] events_malformed_share of events (200 rows)" in msg
    assert "are malformed (quarantined); allowed at most 1.00%" in msg
    assert msg.count(GARBAGE) == 5 and ".jsonl" in msg


def test_clean_jsonl_reads_the_same_rows_as_parquet(spark, jsonl_raw, tmp_path):
    parquet_raw = tmp_path / "parquet"
    synthetic.generate(out=parquet_raw, **_ARGS)
    for name, table in RAW_TABLES.items():
        assert raw.table_files(jsonl_raw, table)[0] == "jsonl"
        checked = raw.read_raw_checked(spark, jsonl_raw, name)
        assert checked.where(checked[raw.REASON].isNotNull()).count() == 0, name
        key = table.keys or table.names

        def rows(root, name=name, key=key):
            df = raw.read_raw_table(spark, root, name)
            return sorted((r.asDict() for r in df.collect()), key=lambda r: [str(r[k]) for k in key])

        from_jsonl, from_parquet = rows(jsonl_raw), rows(parquet_raw)
        assert len(from_jsonl) == len(from_parquet) > 0, name
        assert from_jsonl == from_parquet, name
