"""Contracts: generated docs in sync, Spark/Arrow forms agree, suites catch planted violations."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import schemas
from schemas import docs
from schemas.arrow import to_arrow_schema
from schemas.tables import ALL_TABLES, RECS

ROOT = Path(__file__).resolve().parents[2]


def test_schemas_package_is_the_repo_one_not_a_shadowing_install():
    assert Path(schemas.__file__).resolve().is_relative_to(ROOT)


def test_generated_table_docs_match_the_committed_copy():
    assert (ROOT / "docs" / "tables.md").read_text() == docs.render(), (
        "run: python -m schemas.docs > docs/tables.md"
    )


@pytest.mark.parametrize("name", sorted(ALL_TABLES))
def test_spark_and_arrow_forms_have_the_contract_columns_in_order(name):
    from schemas.spark import to_struct_type

    table = ALL_TABLES[name]
    assert [f.name for f in to_struct_type(table).fields] == table.names
    assert to_arrow_schema(table).names == table.names


def test_recs_suite_names_column_rule_and_rows_of_a_planted_violation(tmp_path):
    from nightrec.validation import runner
    from schemas.expectations import to_suite

    ctx = runner.get_context(str(tmp_path / "gx"), str(tmp_path / "docs"))
    bad = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "rank": [1, 2, 0],
            "item_id": ["a", "b", "c"],
            "score": [1.0, 0.5, 0.1],
            "source": ["model", "model", "oracle"],
        }
    )
    res = runner.run_suite(ctx, to_suite(RECS), bad, engine="pandas", asset="recs")
    assert not res.success
    by_rule = {(f["rule"], f["column"]): f for f in res.failures}
    assert by_rule[("expect_column_values_to_be_in_set", "source")]["rows"] == ["oracle"]
    assert by_rule[("expect_column_values_to_be_between", "rank")]["count"] == 1
    assert (tmp_path / "docs" / "index.html").exists()
