"""Read the raw inputs (events, items, users) from a folder of Parquet, CSV or JSON Lines, always with the
contract schema.

Parquet footers are checked against the contract before Spark touches the data, so a drifted or corrupt file
fails with its path and column named instead of a deep Spark traceback. CSV and JSON Lines are read in Spark's
PERMISSIVE mode: a malformed line is kept, with its text and the reason, for the quarantine.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_type

from nightrec.errors import ContractViolation
from schemas.arrow import arrow_type
from schemas.spark import conform, to_struct_type
from schemas.tables import RAW_TABLES, Table

# The raw formats, by file extension (also the order in which a table folder is searched).
FORMATS = ("parquet", "csv", "jsonl")


def table_files(root: Path, table: Table) -> tuple[str, list[Path]]:
    """The format and data files of one raw table under ``root/<table>/``.

    The format is told by the files' extension: ``*.parquet``, ``*.csv`` or ``*.jsonl`` (one JSON object a
    line), looked for in that order.

    Raises:
        ContractViolation: the folder is missing or holds no Parquet, CSV or JSON Lines files.
    """
    folder = Path(root) / table.name
    if not folder.is_dir():
        raise ContractViolation(str(folder), None, f"raw table folder {table.name}/ is missing")
    for fmt in FORMATS:
        files = sorted(p for p in folder.rglob(f"*.{fmt}") if not p.name.startswith((".", "_")))
        if files:
            return fmt, files
    raise ContractViolation(str(folder), None, f"no {' or '.join(f'*.{f}' for f in FORMATS)} files found")


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


# Columns the checked read adds beside the contract: where a row came from, its text, why it is malformed.
FILE, LINE, REASON = "_file", "_line", "_reason"
_CORRUPT = "_corrupt_record"


def _convert(table: Table, c) -> F.Column:
    """String field -> contract type; malformed values become null (ANSI casts would abort the whole read)."""
    src = F.col(c.name)
    if c.dtype == "array<string>":
        return F.split(src, r"\|")
    if c.dtype == "map<string,string>":
        return F.from_json(src, T.MapType(T.StringType(), T.StringType()))
    if c.dtype == "timestamp":
        return F.try_to_timestamp(src)
    if c.dtype == "bool":
        low = F.lower(F.trim(src))
        return F.when(low.isin("true", "1", "yes"), True).when(low.isin("false", "0", "no"), False)
    if c.dtype == "string":
        return src
    return src.try_cast(_contract_type(table, c.name))


def _read_csv(spark: SparkSession, files: list[Path], table: Table) -> DataFrame:
    # CSV cannot hold arrays or maps: tags are '|'-joined and attributes a JSON object; read as strings first.
    string_schema = T.StructType(
        [T.StructField(c.name, T.StringType(), True) for c in table.columns]
        + [T.StructField(_CORRUPT, T.StringType(), True)]
    )
    df = (
        spark.read.schema(string_schema)
        .option("header", True)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", _CORRUPT)
        # RFC 4180 doubles quotes inside quoted fields (JSON attributes); Spark's default escape is a backslash.
        .option("escape", '"')
        .csv([str(f) for f in files])
    )
    reasons = [
        F.when(
            F.col(_CORRUPT).isNotNull(),
            F.lit(f"malformed line: expected {len(table.columns)} comma-separated fields"),
        )
    ]
    typed = {}
    for c in table.columns:
        typed[c.name] = _convert(table, c)
        if c.dtype not in ("string", "array<string>"):
            bad = F.col(c.name).isNotNull() & typed[c.name].isNull()
            reasons.append(F.when(bad, F.lit(f"unparsable {c.dtype} in column {c.name!r}")))
    reasons += _empty_required(table, F.col(_CORRUPT).isNull())
    line = F.coalesce(
        F.col(_CORRUPT), F.concat_ws(",", *[F.coalesce(F.col(c.name), F.lit("")) for c in table.columns])
    )
    return df.select(
        *[typed[c.name].alias(c.name) for c in table.columns],
        F.input_file_name().alias(FILE),
        line.alias(LINE),
        F.coalesce(*reasons).alias(REASON),
    )


def _empty_required(table: Table, parsed: F.Column) -> list[F.Column]:
    """A reason for each required field left empty on an otherwise well-formed line (``,,,,,``, ``{}``).

    Such a line cannot become a valid row: it is quarantined with the malformed ones, so a few of them in a
    large file cost a few rows instead of failing the not-null rules (and the night) on the whole table.
    """
    return [
        F.when(parsed & F.col(c.name).isNull(), F.lit(f"empty required field {c.name!r}"))
        for c in table.columns
        if not c.nullable
    ]


def _read_jsonl(spark: SparkSession, files: list[Path], table: Table) -> DataFrame:
    # JSON carries types: read straight into the contract's types. A line that is not a JSON object, or a value
    # of the wrong JSON type (a string where a number, array or object belongs), lands whole in the corrupt
    # record column while the other fields still parse; the raw value per field tells which one broke.
    schema = T.StructType([*to_struct_type(table).fields, T.StructField(_CORRUPT, T.StringType(), True)])
    df = (
        spark.read.schema(schema)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", _CORRUPT)
        .json([str(f) for f in files])
    )
    corrupt = F.col(_CORRUPT).isNotNull()
    reasons = [
        F.when(
            corrupt & F.col(c.name).isNull() & F.get_json_object(_CORRUPT, f"$.{c.name}").isNotNull(),
            F.lit(f"unparsable {c.dtype} in column {c.name!r}"),
        )
        for c in table.columns
    ]
    reasons.append(F.when(corrupt, F.lit("malformed line: expected one JSON object")))
    reasons += _empty_required(table, ~corrupt)
    return df.select(
        *table.names,
        F.input_file_name().alias(FILE),
        F.col(_CORRUPT).alias(LINE),
        F.coalesce(*reasons).alias(REASON),
    )


def read_raw_checked(spark: SparkSession, root: str | Path, name: str) -> DataFrame:
    """Every row of one raw table in contract form plus ``_file``, ``_line`` and ``_reason``.

    ``_reason`` is null for well-formed rows; CSV rows with the wrong number of fields or an unparsable
    typed value, and JSON Lines that are not a JSON object or hold a value of the wrong type, carry the reason
    (the quarantine hook) and their text in ``_line``. Parquet is typed, so its rows never carry one.
    """
    table = RAW_TABLES[name]
    fmt, files = table_files(Path(root), table)
    if fmt == "csv":
        return _read_csv(spark, files, table)
    if fmt == "jsonl":
        return _read_jsonl(spark, files, table)
    check_parquet_files(files, table)
    file_schema = pq.read_schema(files[0])
    df = spark.read.schema(_parquet_read_schema(file_schema, table)).parquet(*[str(f) for f in files])
    for c in table.columns:
        if c.name not in file_schema.names:
            df = df.withColumn(c.name, F.lit(None).cast(_contract_type(table, c.name)))
    return conform(df, table).select(
        *table.names,
        F.input_file_name().alias(FILE),
        F.lit(None).cast("string").alias(LINE),
        F.lit(None).cast("string").alias(REASON),
    )


def _parquet_read_schema(file_schema: pa.Schema, table: Table) -> T.StructType:
    """The Spark read schema of the contract's columns that the file has (the footers are already checked).

    Given a schema, Spark reads no footer to infer one: without it each read of a table is a Spark job of its
    own, about a second on a fresh JVM. Where the file's type is the contract's, or one Spark's Parquet reader
    widens into it (a timestamp with or without time zone, a large string), the contract's type is read
    directly; any other compatible type (an int where a double belongs) is read as the file has it and cast by
    ``conform``, as inference would have.
    """
    fields = []
    for c in table.columns:
        if c.name not in file_schema.names:
            continue
        actual, expected = file_schema.field(c.name).type, arrow_type(c.dtype)
        same = actual == expected or (pa.types.is_timestamp(actual) and pa.types.is_timestamp(expected))
        same = same or (pa.types.is_large_string(actual) and pa.types.is_string(expected))
        dtype = _contract_type(table, c.name) if same else from_arrow_type(actual)
        fields.append(T.StructField(c.name, dtype, True))
    return T.StructType(fields)


def _contract_type(table: Table, name: str) -> T.DataType:
    return to_struct_type(table)[name].dataType


def read_raw_table(spark: SparkSession, root: str | Path, name: str) -> DataFrame:
    """Read one raw table in contract form (explicit schema, contract column order), malformed rows left out."""
    table = RAW_TABLES[name]
    return read_raw_checked(spark, root, name).where(F.col(REASON).isNull()).select(*table.names)


def raw_files(root: str | Path) -> list[Path]:
    """The three raw table folders (for fingerprinting)."""
    return [Path(root) / name for name in RAW_TABLES]
