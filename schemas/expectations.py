"""A table's contract as rules (``schemas.rules``), and the Great Expectations suites made of them."""

from __future__ import annotations

from collections.abc import Sequence

import great_expectations as gx
import great_expectations.expectations as gxe

from schemas.rules import Between, ColumnsMatch, InSet, NotNull, RowCountBetween, Rule, Unique
from schemas.tables import ITEMS, RECS, USERS, VOCAB, Table


def contract_rules(table: Table, allowed: dict[str, list[str]] | None = None) -> list[Rule]:
    """The rules every table gets from its declaration: columns, not-null, keys, enums, ranges.

    Args:
        allowed: Value sets that replace a column's declared ``allowed`` (settings such as the event types).
    """
    allowed = allowed or {}
    rules: list[Rule] = [ColumnsMatch(tuple(table.names))]
    for c in table.columns:
        if not c.nullable:
            rules.append(NotNull(c.name))
        values = allowed.get(c.name) or (list(c.allowed) if c.allowed else None)
        if values:
            rules.append(InSet(c.name, tuple(values)))
        if c.min_value is not None or c.max_value is not None:
            rules.append(Between(c.name, c.min_value, c.max_value))
    keys = table.keys
    # Multi-column keys of partitioned tables include their partition column.
    if len(keys) == 1 and not table.partition_by:
        rules.append(Unique((keys[0],)))
    elif len(keys) > 1 or (keys and table.partition_by):
        rules.append(Unique((*table.partition_by, *keys)))
    return rules


# Hand-written rules beside the generated ones.
EXTRA_RULES: dict[str, tuple[Rule, ...]] = {
    ITEMS.name: (RowCountBetween(min_value=1),),
    USERS.name: (),
    VOCAB.name: (Unique(("field", "idx")),),
    RECS.name: (Unique(("user_id", "item_id")),),
}


def table_rules(
    table: Table, allowed: dict[str, list[str]] | None = None, extra: Sequence[Rule] = ()
) -> list[Rule]:
    """A table's whole contract: generated rules + its hand-written ones + ``extra`` (a gate's own)."""
    return [*contract_rules(table, allowed), *EXTRA_RULES.get(table.name, ()), *extra]


def to_suite(
    table: Table, allowed: dict[str, list[str]] | None = None, extra: Sequence[Rule] = ()
) -> gx.ExpectationSuite:
    """The suite named after the table, made of :func:`table_rules`."""
    exps = [r.expectation() for r in table_rules(table, allowed, extra)]
    return gx.ExpectationSuite(name=table.name, expectations=exps)


def recs_audit_suite(top_k: int) -> gx.ExpectationSuite:
    """Per-user audit of the final lists: K items (fewer only when fewer than K are recommendable to the user,
    never none), no duplicates, nothing seen, unavailable, unknown or out of vocabulary."""
    zero = ("n_short", "n_duplicates", "n_seen", "n_unavailable", "n_unknown_items", "n_oov_items")
    return gx.ExpectationSuite(
        name="recs_audit",
        expectations=[
            gxe.ExpectColumnValuesToBeBetween(column="n_recs", min_value=1, max_value=top_k),
            *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=0) for c in zero],
        ],
    )
