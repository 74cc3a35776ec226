"""Fixtures for the gate tests: copies of the tiny raw data to plant bad rows in, and run history."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec.validation import history
from tests.conftest import make_settings

RUN_DATE = date(2026, 11, 22)  # tiny_raw's natural run date: events end the day before


@pytest.fixture
def raw_copy(tiny_raw, tmp_path) -> Path:
    out = tmp_path / "raw"
    shutil.copytree(tiny_raw, out)
    return out


@pytest.fixture(scope="module")
def clean_stats(spark, tiny_raw, tmp_path_factory) -> dict:
    """The raw gate's statistics of the clean tiny data: the baseline the history fixtures repeat."""
    from nightrec.validation import gates

    s = make_settings(tmp_path_factory.mktemp("clean") / "home")
    report = gates.validate_raw(spark, tiny_raw, s, RUN_DATE)
    assert report.success, report.summary()
    return report.stats


def seed_history(settings, raw_stats: dict, days: int = 7, ds: date = RUN_DATE) -> None:
    """Pretend ``days`` successful nights before ``ds`` saw ``raw_stats``."""
    for k in range(1, days + 1):
        history.save(settings.lake, ds - timedelta(days=k), {"raw": raw_stats})


def read_table(raw: Path, name: str) -> pa.Table:
    return pq.read_table(raw / name)


def write_table(raw: Path, name: str, tbl: pa.Table | pd.DataFrame) -> None:
    """Replace a raw table's parts with one file holding ``tbl``."""
    if isinstance(tbl, pd.DataFrame):
        tbl = pa.Table.from_pandas(tbl, preserve_index=False)
    for f in (raw / name).glob("*.parquet"):
        f.unlink()
    pq.write_table(tbl, raw / name / "part-00000.parquet")
