"""Markdown docs of every table, generated from the contracts (`python -m schemas.docs > docs/tables.md`)."""

from __future__ import annotations

from schemas.tables import FEATURE_TABLES, RAW_TABLES, RECS, Table


def table_markdown(table: Table) -> str:
    lines = [f"### `{table.name}`", "", table.doc, ""]
    if table.partition_by:
        lines += [f"Partitioned by `{', '.join(table.partition_by)}` under `ds=YYYY-MM-DD`.", ""]
    lines += ["| column | type | nullable | key | rule | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for c in table.columns:
        rule = []
        if c.allowed:
            rule.append("in {" + ", ".join(c.allowed) + "}")
        if c.min_value is not None:
            rule.append(f">= {c.min_value:g}")
        if c.max_value is not None:
            rule.append(f"<= {c.max_value:g}")
        lines.append(
            f"| `{c.name}` | {c.dtype} | {'yes' if c.nullable else 'no'} | {'yes' if c.key else ''} | "
            f"{', '.join(rule)} | {c.doc} |"
        )
    return "\n".join(lines)


def render() -> str:
    parts = [
        "# nightrec tables",
        "",
        "Generated from `schemas/tables.py` by `python -m schemas.docs > docs/tables.md`; a test keeps it in sync.",
        "",
        "## Raw inputs",
        "",
    ]
    parts += [table_markdown(t) + "\n" for t in RAW_TABLES.values()]
    parts += ["## Lake tables (written by build_features)", ""]
    parts += [table_markdown(t) + "\n" for t in FEATURE_TABLES.values()]
    parts += ["## Outputs", "", table_markdown(RECS)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
