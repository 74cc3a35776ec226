"""Great Expectations suites generated from the table contracts, plus the extra rules kept next to them."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe

from schemas.tables import ITEMS, RECS, USERS, VOCAB, Table


def contract_expectations(table: Table, allowed: dict[str, list[str]] | None = None) -> list:
    """Expectations every table gets from its declaration: columns, not-null, keys, enums, ranges."""
    allowed = allowed or {}
    exps: list = [gxe.ExpectTableColumnsToMatchSet(column_set=table.names, exact_match=True)]
    for c in table.columns:
        if not c.nullable:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=c.name))
        values = allowed.get(c.name) or (list(c.allowed) if c.allowed else None)
        if values:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=c.name, value_set=values))
        if c.min_value is not None or c.max_value is not None:
            exps.append(
                gxe.ExpectColumnValuesToBeBetween(column=c.name, min_value=c.min_value, max_value=c.max_value)
            )
    keys = table.keys
    # Multi-column keys of partitioned tables include their partition column.
    if len(keys) == 1 and not table.partition_by:
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=keys[0]))
    elif len(keys) > 1 or (keys and table.partition_by):
        exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=[*table.partition_by, *keys]))
    return exps


# Hand-written rules beside the generated ones.
EXTRA_RULES = {
    ITEMS.name: lambda: [gxe.ExpectTableRowCountToBeBetween(min_value=1)],
    USERS.name: lambda: [],
    VOCAB.name: lambda: [gxe.ExpectCompoundColumnsToBeUnique(column_list=["field", "idx"])],
    RECS.name: lambda: [gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"])],
}


def to_suite(
    table: Table, allowed: dict[str, list[str]] | None = None, extra: list | None = None
) -> gx.ExpectationSuite:
    """The suite named after the table: contract expectations + per-table extra rules + ``extra``."""
    exps = contract_expectations(table, allowed)
    exps += EXTRA_RULES.get(table.name, lambda: [])()
    exps += extra or []
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
