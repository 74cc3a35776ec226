"""Read the raw inputs (events, items, users) from a folder of Parquet or CSV, always with the contract schema.

Parquet footers are checked against the contract before Spark touches the data, so a drifted or corrupt file
fails with its path and column named instead of a deep Spark traceback.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from nightrec.errors import ContractViolation
from schemas.arrow import arrow_type
from schemas.spark import conform, to_struct_type
from schemas.tables import RAW_TABLES, Table


def table_files(root: Path, table: Table) -> tuple[str, list[Path]]:
    """The format and data files of one raw table under ``root/<table>/``.

    Raises:
        ContractViolation: the folder is missing or holds no Parquet/CSV files.
    """
    folder = Path(root) / table.name
    if not folder.is_dir():
        raise ContractViolation(str(folder), None, f"raw table folder {table.name}/ is missing")
    for fmt, pattern in (("parquet", "*.parquet"), ("csv", "*.csv")):
        files = sorted(p for p in folder.rglob(pattern) if not p.name.startswith((".", "_")))
        if files:
            return fmt, files
    raise ContractViolation(str(folder), None, "no *.parquet or *.csv files found")


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual == expected:
        return True
    if pa.types.is_timestamp(expected):
        return pa.types.is_timestamp(actual)
    if pa.types.is_string(expected):
        return pa.types.is_string(actual) or pa.types.is_large_string(actual)
    if pa.types.is_floating(expected):
        return pa.types.is_floating(actual) or pa.types.is_integer(actual)
    if pa.types.is_integer(expected):
        return pa.types.is_integer(actual)
    if pa.types.is_list(expected) or pa.types.is_large_list(expected):
        return pa.types.is_list(actual) or pa.types.is_large_list(actual)
    if pa.types.is_map(expected):
        return pa.types.is_map(actual)
    return False


def check_parquet_files(files: list[Path], table: Table) -> None:
    """Check every file's footer: readable, required columns present, compatible types.

    Raises:
        ContractViolation: naming the file, the column and expected vs actual type (or the reader's error).
    """
    for f in files:
        try:
            schema = pq.read_schema(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise ContractViolation(
                str(f), None, f"unreadable Parquet file (truncated or corrupt?): {e}"
            ) from None
        for col in table.columns:
            if col.name not in schema.names:
                if col.nullable:
                    continue
                raise ContractViolation(
                    str(f),
                    col.name,
                    f"required column missing (expected {col.dtype}); file has {schema.names}",
                )
            actual = schema.field(col.name).type
            if not _compatible(actual, arrow_type(col.dtype)):
                raise ContractViolation(
                    str(f), col.name, f"type mismatch: expected {col.dtype}, found {actual}"
                )


def _read_csv(spark: SparkSession, files: list[Path], table: Table) -> DataFrame:
    # CSV cannot hold arrays or maps: tags are '|'-joined and attributes a JSON object; read as strings first.
    string_schema = T.StructType([T.StructField(c.name, T.StringType(), True) for c in table.columns])
    df = (
        spark.read.schema(string_schema)
        .option("header", True)
        .option("mode", "PERMISSIVE")
        # RFC 4180 doubles quotes inside quoted fields (JSON attributes); Spark's default escape is a backslash.
        .option("escape", '"')
        .csv([str(f) for f in files])
    )
    for c in table.columns:
        if c.dtype == "array<string>":
            df = df.withColumn(c.name, F.when(F.col(c.name).isNull(), None).otherwise(F.split(c.name, r"\|")))
        elif c.dtype == "map<string,string>":
            df = df.withColumn(c.name, F.from_json(c.name, T.MapType(T.StringType(), T.StringType())))
        elif c.dtype == "timestamp":
            df = df.withColumn(c.name, F.to_timestamp(c.name))
        elif c.dtype == "bool":
            df = df.withColumn(c.name, F.lower(F.col(c.name)).isin("true", "1", "yes"))
    return conform(df, table)


def read_raw_table(spark: SparkSession, root: str | Path, name: str) -> DataFrame:
    """Read one raw table in contract form (explicit schema, contract column order)."""
    table = RAW_TABLES[name]
    fmt, files = table_files(Path(root), table)
    if fmt == "csv":
        return _read_csv(spark, files, table)
    check_parquet_files(files, table)
    present = set(pq.read_schema(files[0]).names)
    df = spark.read.parquet(*[str(f) for f in files])
    for c in table.columns:
        if c.name not in present:
            df = df.withColumn(c.name, F.lit(None).cast(to_struct_type(table)[c.name].dataType))
    return conform(df, table)


def raw_files(root: str | Path) -> list[Path]:
    """The three raw table folders (for fingerprinting)."""
    return [Path(root) / name for name in RAW_TABLES]
