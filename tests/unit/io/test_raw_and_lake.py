"""Raw reads name the file and column of a broken input; lake partitions are invisible until marked."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec.errors import ContractViolation, StageInputMissing
from nightrec.io import lake, raw
from schemas.spark import to_struct_type
from schemas.tables import EVENTS


def _events_file(folder, ts_type="timestamp"):
    (folder / "events").mkdir(parents=True)
    ts = (
        ["2026-01-01T00:00:00"]
        if ts_type == "string"
        else pa.array([1_700_000_000_000_000], pa.timestamp("us", tz="UTC"))
    )
    tbl = pa.table({"user_id": ["u1"], "item_id": ["i1"], "event_type": ["click"], "ts": ts})
    path = folder / "events" / "part-0.parquet"
    pq.write_table(tbl, path)
    return path


def test_type_drift_names_file_column_and_types(tmp_path):
    path = _events_file(tmp_path, ts_type="string")
    with pytest.raises(ContractViolation) as e:
        raw.check_parquet_files([path], EVENTS)
    msg = str(e.value)
    assert str(path) in msg and "'ts'" in msg and "expected timestamp" in msg and "string" in msg


def test_truncated_parquet_is_reported_with_its_path(tmp_path):
    path = _events_file(tmp_path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ContractViolation, match="unreadable Parquet file") as e:
        raw.check_parquet_files([path], EVENTS)
    assert str(path) in str(e.value)


def test_missing_optional_columns_are_allowed_missing_required_are_not(tmp_path):
    path = _events_file(tmp_path)
    raw.check_parquet_files([path], EVENTS)  # value and session_id are nullable: absent is fine
    pq.write_table(pa.table({"user_id": ["u1"]}), path)
    with pytest.raises(ContractViolation, match="required column missing"):
        raw.check_parquet_files([path], EVENTS)


def test_compatible_parquet_types_are_read_into_the_contract(spark, tmp_path):
    """Writers differ: a naive timestamp, large strings, an integer value, an extra column, a missing optional
    one. The read schema is given (no footer-reading job), yet every such file reads in contract form."""
    (tmp_path / "events").mkdir()
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(["u1", "u2"], pa.large_string()),
                "item_id": ["i1", "i2"],
                "event_type": ["click", "rating"],
                "ts": pa.array([1_700_000_000_000_000, 1_700_000_060_000_000], pa.timestamp("us")),
                "value": pa.array([None, 4], pa.int32()),
                "extra": [1, 2],
            }
        ),
        tmp_path / "events" / "part-0.parquet",
    )
    df = raw.read_raw_table(spark, tmp_path, "events")
    assert [(f.name, f.dataType) for f in df.schema] == [(f.name, f.dataType) for f in to_struct_type(EVENTS)]
    rows = sorted(df.collect())
    assert [r.user_id for r in rows] == ["u1", "u2"] and [r.value for r in rows] == [None, 4.0]
    # A naive timestamp is read as UTC (the session's zone), as the contract's instants are.
    assert rows[0].ts == datetime.fromtimestamp(1_700_000_000, UTC).replace(tzinfo=None)
    assert all(r.session_id is None for r in rows)


def test_missing_table_folder_is_named(tmp_path):
    with pytest.raises(ContractViolation, match="items"):
        raw.table_files(tmp_path, raw.RAW_TABLES["items"])


def test_partition_without_marker_is_refused_and_staging_swap_replaces_atomically(tmp_path):
    ds = date(2026, 1, 2)
    final = lake.partition_path(tmp_path, "t", ds)
    final.mkdir(parents=True)
    (final / "part.parquet").write_text("half-written")
    with pytest.raises(StageInputMissing, match="no completion marker"):
        lake.require_partition(tmp_path, "t", ds)
    staging = lake.staging_path(tmp_path, "t", ds)
    staging.mkdir(parents=True)
    (staging / "part.parquet").write_text("complete")
    lake.commit_staging(staging, final)
    lake.write_marker(final, "fp1", rows=1)
    assert lake.require_partition(tmp_path, "t", ds) == final
    assert (final / "part.parquet").read_text() == "complete"
    assert lake.is_complete(tmp_path, "t", ds, "fp1") and not lake.is_complete(tmp_path, "t", ds, "fp2")
    assert lake.latest_complete(tmp_path, "t", before=date(2026, 1, 3)) == ds
    assert lake.latest_complete(tmp_path, "t", before=ds) is None
