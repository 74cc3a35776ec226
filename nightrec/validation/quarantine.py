"""Malformed raw rows go to ``lake/quarantine/ds=.../table=<name>/`` with the reason, where on-call can read them."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from nightrec.io.raw import FILE, LINE, REASON

ROOT = "quarantine"


def quarantine_path(lake: str | Path, ds: date, table: str) -> Path:
    return Path(lake) / ROOT / f"ds={ds.isoformat()}" / f"table={table}"


def write(checked: DataFrame, lake: str | Path, ds: date, table: str) -> Path:
    """Write the malformed rows of one raw table (replacing an earlier run's for the same date).

    Returns:
        The folder holding ``file``, ``line`` and ``reason`` of every quarantined row.
    """
    out = quarantine_path(lake, ds, table)
    shutil.rmtree(out, ignore_errors=True)
    bad = checked.where(F.col(REASON).isNotNull()).select(
        F.lit(table).alias("table"),
        F.col(FILE).alias("file"),
        F.col(LINE).alias("line"),
        F.col(REASON).alias("reason"),
    )
    bad.coalesce(1).write.mode("overwrite").parquet(str(out))
    return out
