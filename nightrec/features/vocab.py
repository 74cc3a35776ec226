"""Stable vocabularies: an id keeps its index across nights, new values are appended, 0 means OOV."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window


def extend_vocab(previous: DataFrame | None, values: DataFrame, field: str) -> DataFrame:
    """Append ``values`` (one string column ``value``) unseen in ``previous`` to the field's vocabulary.

    New values get indices after the previous maximum, in sorted order, so the result is deterministic.
    """
    values = values.where(F.col("value").isNotNull()).select("value").distinct()
    if previous is None:
        old = None
        base = F.lit(0)
        new = values
    else:
        old = previous.where(F.col("field") == field).select("value", "idx")
        base = F.lit(old.agg(F.coalesce(F.max("idx"), F.lit(0))).first()[0])
        new = values.join(old.select("value"), on="value", how="left_anti")
    # A single-partition window is fine: vocabularies are small next to events and sorted once per night.
    appended = new.withColumn("idx", (base + F.row_number().over(Window.orderBy("value"))).cast("int"))
    out = appended if old is None else old.unionByName(appended)
    return out.withColumn("field", F.lit(field)).select("field", "value", "idx")


def lookup(vocab: DataFrame, field: str, column: str, out: str) -> DataFrame:
    """A (column -> out index) mapping table for joins; missing values become 0 (OOV) at the join site."""
    return vocab.where(F.col("field") == field).select(F.col("value").alias(column), F.col("idx").alias(out))
