"""The rules of a table contract, declared once.

Each rule builds both of its forms: the Great Expectations expectation (the Data Docs; the recs gate validates
pandas frames with it) and the Spark form the raw and feature gates fold into one aggregation per table (the
condition selecting its offending rows, or the key a grouping counts repeats of). A rule without both forms
cannot be declared, so a contract never meets an unknown rule mid-night.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import great_expectations.expectations as gxe
from pyspark.sql import Column as SparkColumn
from pyspark.sql import functions as F


@dataclass(frozen=True)
class Rule(ABC):
    """One rule: its expectation type names it in reports and the Data Docs."""

    expectation_type: ClassVar[str]

    def __init_subclass__(cls, **kwargs) -> None:
        # At import: a rule the gates could not fold into Spark would otherwise count as passing.
        super().__init_subclass__(**kwargs)
        forms = ("offending", "key", "table_value")
        if not any(getattr(cls, f) is not getattr(Rule, f) for f in forms):
            raise TypeError(
                f"{cls.__name__}: a contract rule needs a Spark form (override offending, key or table_value)"
            )

    @property
    @abstractmethod
    def column(self) -> str | list[str] | None:
        """The column (or key columns) a failure is reported under; None for a table-level rule."""

    @abstractmethod
    def expectation(self) -> gxe.Expectation:
        """The Great Expectations form."""

    def offending(self) -> SparkColumn | None:
        """Row-level rules: the Spark condition selecting the rows that break it."""
        return None

    @property
    def key(self) -> tuple[str, ...]:
        """Uniqueness rules: the columns whose repeated values break it (counted by a grouping)."""
        return ()

    def table_value(self, rows: int, columns: list[str]) -> tuple[float, float | None, float | None] | None:
        """Table-level rules: (metric, allowed min, allowed max) from the row count and the columns read."""
        return None

    @abstractmethod
    def explain(self, value: int, rows: int) -> str:
        """One line for a report: what ``value`` (offending rows, or the table-level metric) means."""


@dataclass(frozen=True)
class NotNull(Rule):
    name: str
    expectation_type: ClassVar[str] = "expect_column_values_to_not_be_null"

    @property
    def column(self) -> str:
        return self.name

    def expectation(self) -> gxe.Expectation:
        return gxe.ExpectColumnValuesToNotBeNull(column=self.name)

    def offending(self) -> SparkColumn:
        return F.col(self.name).isNull()

    def explain(self, value: int, rows: int) -> str:
        return f"{value} of {rows} rows are null"


@dataclass(frozen=True)
class InSet(Rule):
    name: str
    values: tuple[str, ...]
    expectation_type: ClassVar[str] = "expect_column_values_to_be_in_set"

    @property
    def column(self) -> str:
        return self.name

    def expectation(self) -> gxe.Expectation:
        return gxe.ExpectColumnValuesToBeInSet(column=self.name, value_set=list(self.values))

    def offending(self) -> SparkColumn:
        c = F.col(self.name)
        return c.isNotNull() & ~c.isin(list(self.values))

    def explain(self, value: int, rows: int) -> str:
        return f"{value} of {rows} rows are outside {list(self.values)}"


@dataclass(frozen=True)
class Between(Rule):
    """Inclusive bounds; nulls are left to ``NotNull``."""

    name: str
    min_value: float | None = None
    max_value: float | None = None
    expectation_type: ClassVar[str] = "expect_column_values_to_be_between"

    def __post_init__(self) -> None:
        if self.min_value is None and self.max_value is None:
            raise ValueError(f"Between({self.name!r}) needs a min_value or a max_value")

    @property
    def column(self) -> str:
        return self.name

    def expectation(self) -> gxe.Expectation:
        return gxe.ExpectColumnValuesToBeBetween(
            column=self.name, min_value=self.min_value, max_value=self.max_value
        )

    def offending(self) -> SparkColumn:
        c, cond = F.col(self.name), F.lit(False)
        if self.min_value is not None:
            cond = cond | (c < self.min_value)
        if self.max_value is not None:
            cond = cond | (c > self.max_value)
        return cond

    def explain(self, value: int, rows: int) -> str:
        return f"{value} of {rows} rows are outside [{self.min_value}, {self.max_value}]"


@dataclass(frozen=True)
class Unique(Rule):
    """One column's values, or a compound key's, appear once."""

    columns: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("Unique needs at least one column")

    @property
    def expectation_type(self) -> str:  # type: ignore[override]
        return (
            "expect_column_values_to_be_unique"
            if len(self.columns) == 1
            else "expect_compound_columns_to_be_unique"
        )

    @property
    def column(self) -> str | list[str]:
        return self.columns[0] if len(self.columns) == 1 else list(self.columns)

    @property
    def key(self) -> tuple[str, ...]:
        return self.columns

    def expectation(self) -> gxe.Expectation:
        if len(self.columns) == 1:
            return gxe.ExpectColumnValuesToBeUnique(column=self.columns[0])
        return gxe.ExpectCompoundColumnsToBeUnique(column_list=list(self.columns))

    def explain(self, value: int, rows: int) -> str:
        what = "value" if len(self.columns) == 1 else "key"
        return f"{value} of {rows} rows repeat a {what} that must be unique"


@dataclass(frozen=True)
class ColumnsMatch(Rule):
    columns: tuple[str, ...]
    exact: bool = True
    expectation_type: ClassVar[str] = "expect_table_columns_to_match_set"

    @property
    def column(self) -> None:
        return None

    def expectation(self) -> gxe.Expectation:
        return gxe.ExpectTableColumnsToMatchSet(column_set=list(self.columns), exact_match=self.exact)

    def table_value(self, rows: int, columns: list[str]) -> tuple[float, float | None, float | None]:
        want, have = set(self.columns), set(columns)
        return len(want - have) + (len(have - want) if self.exact else 0), None, 0

    def explain(self, value: int, rows: int) -> str:
        return f"columns differ from {list(self.columns)} ({value} missing or unexpected)"


@dataclass(frozen=True)
class RowCountBetween(Rule):
    min_value: int | None = None
    max_value: int | None = None
    expectation_type: ClassVar[str] = "expect_table_row_count_to_be_between"

    @property
    def column(self) -> None:
        return None

    def expectation(self) -> gxe.Expectation:
        return gxe.ExpectTableRowCountToBeBetween(min_value=self.min_value, max_value=self.max_value)

    def table_value(self, rows: int, columns: list[str]) -> tuple[float, float | None, float | None]:
        return rows, self.min_value, self.max_value

    def explain(self, value: int, rows: int) -> str:
        return f"{value} rows; expected between {self.min_value} and {self.max_value}"
