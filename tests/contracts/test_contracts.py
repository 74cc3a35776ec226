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
    by_rule = {(f.rule, f.column): f for f in res.failures}
    assert by_rule[("expect_column_values_to_be_in_set", "source")].rows == ["oracle"]
    assert by_rule[("expect_column_values_to_be_between", "rank")].count == 1
    assert (tmp_path / "docs" / "index.html").exists()


def test_the_gx_and_spark_forms_of_every_recs_rule_count_the_same_offending_rows(tmp_path, spark):
    """The gates fold a contract into Spark conditions, the Data Docs show its GX suite: both come from one
    rule, and on a frame breaking every rule they must agree row for row."""
    from nightrec.validation import profile, runner
    from nightrec.validation.checks import contract_rules
    from schemas.expectations import table_rules, to_suite

    bad = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", None],
            "rank": [1, 1, 0, 2, 3],  # (u1, 1) twice; rank 0 below the minimum
            "item_id": ["a", "b", "a", "a", "c"],  # (u2, a) twice
            "score": [1.0, None, 0.5, 0.4, 0.1],
            "source": ["model", "model", "oracle", "fallback", "model"],
        }
    )
    ctx = runner.get_context(str(tmp_path / "gx"), str(tmp_path / "docs"))
    gx = runner.run_suite(ctx, to_suite(RECS), bad, engine="pandas", asset="recs")
    gx_counts = {f.rule + str(f.column): f.count for f in gx.failures}
    df = spark.createDataFrame(bad.astype(object).where(bad.notna(), None), schema=None)
    folded = contract_rules(table_rules(RECS))
    spark_counts, broken = {}, set()
    for r in folded:
        if r.cond is not None:
            n = df.where(r.cond).count()
        elif r.key:
            n = profile.duplicate_key_rows(df, r.key)
        else:
            continue
        if n:
            spark_counts[r.rule.expectation_type + str(r.rule.column)] = n
            broken.add(r.rule.expectation_type)
    assert spark_counts == gx_counts
    # Every kind of row rule of the contract was broken, so the comparison covered each kind.
    assert broken == {r.rule.expectation_type for r in folded if r.cond is not None or r.key}
    assert len(broken) == 4


def test_a_rule_without_a_spark_form_fails_where_it_is_declared():
    import great_expectations.expectations as gxe

    from schemas.rules import Rule

    with pytest.raises(TypeError, match="OnlyGx: a contract rule needs a Spark form"):

        class OnlyGx(Rule):  # noqa: F841 (declaring it is the test)
            expectation_type = "expect_column_values_to_be_increasing"

            @property
            def column(self):
                return "rank"

            def expectation(self):
                return gxe.ExpectColumnValuesToBeIncreasing(column="rank")

            def explain(self, value, rows):
                return f"{value} rows out of order"
