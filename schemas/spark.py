"""Spark forms of the contracts: explicit read schemas and the select-as-contract before every write."""

from __future__ import annotations

from pyspark.sql import Column as SparkColumn
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from schemas.tables import Table

_SPARK_TYPES = {
    "string": T.StringType(),
    "int32": T.IntegerType(),
    "int64": T.LongType(),
    "float": T.FloatType(),
    "double": T.DoubleType(),
    "bool": T.BooleanType(),
    "timestamp": T.TimestampType(),
    "array<string>": T.ArrayType(T.StringType()),
    "array<int32>": T.ArrayType(T.IntegerType()),
    "map<string,string>": T.MapType(T.StringType(), T.StringType()),
}


def spark_type(dtype: str) -> T.DataType:
    return _SPARK_TYPES[dtype]


def to_struct_type(table: Table) -> T.StructType:
    """The explicit schema every read of ``table`` uses (never inferSchema)."""
    return T.StructType([T.StructField(c.name, spark_type(c.dtype), c.nullable) for c in table.columns])


def conform(df: DataFrame, table: Table) -> DataFrame:
    """One select in contract order with casts: the only shape in which a table is written.

    Raises:
        ValueError: a contract column is missing from ``df`` (names the table and the columns).
    """
    missing = [c.name for c in table.columns if c.name not in df.columns]
    if missing:
        raise ValueError(f"cannot write table {table.name!r}: missing columns {missing}; have {df.columns}")
    cols: list[SparkColumn] = [F.col(c.name).cast(spark_type(c.dtype)).alias(c.name) for c in table.columns]
    return df.select(*cols)
