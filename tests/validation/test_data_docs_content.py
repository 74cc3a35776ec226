"""What the Data Docs pages say: which night and gate a validation belongs to, which data asset it judged,
the measured figure of an aggregate rule against its bound, and pass/fail per night on the root index."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from nightrec.validation import checks, report, runner
from nightrec.validation.checks import Check
from schemas.expectations import to_suite
from schemas.tables import RECS

DAYS = (date(2026, 11, 21), date(2026, 11, 22))


def _recs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "rank": [1, 1],
            "item_id": ["a", "b"],
            "score": [1.0, 0.5],
            "source": ["model"] * 2,
        }
    )


def _coverage(value: float) -> Check:
    return Check(
        "catalog_coverage", value, 0.02, None, "fail", "recs", "item_id", "distinct items / recommendable"
    )


@pytest.fixture(scope="module")
def docs_root(tmp_path_factory) -> Path:
    """Two nights: the first passes every rule, the second's coverage rule fails."""
    root = tmp_path_factory.mktemp("content")
    for ds, coverage in zip(DAYS, (0.25, 0.012), strict=True):
        docs = str(root / "data_docs" / f"ds={ds.isoformat()}")
        ctx = runner.get_context(str(root / "gx"), docs)
        runner.name_runs(f"{ds.isoformat()}-recommendations")
        contract = runner.run_suite(ctx, to_suite(RECS), _recs(), engine="pandas", asset="recs")
        rules = checks.run_checks(ctx, "recs_checks", [_coverage(coverage)])
        report.make_report("recommendations", [contract, rules], docs)
    return root / "data_docs"


def _validation_pages(docs_root: Path, ds: date, suite: str) -> list[str]:
    pages = sorted((docs_root / f"ds={ds.isoformat()}" / "validations" / suite).rglob("*.html"))
    assert pages, sorted((docs_root / f"ds={ds.isoformat()}").rglob("*.html"))
    return [p.read_text() for p in pages]


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_a_validation_page_names_its_night_gate_and_data_asset(docs_root):
    text = _text(_validation_pages(docs_root, DAYS[0], "recs")[0])
    assert "Run Name 2026-11-21-recommendations" in text
    assert "__none__" not in text
    assert re.search(r"Data asset:? recs\b", text), text[:2000]


def test_an_aggregate_rule_shows_the_measured_figure_against_its_bound(docs_root):
    passed = _text(_validation_pages(docs_root, DAYS[0], "recs_checks")[0])
    failed = _text(_validation_pages(docs_root, DAYS[1], "recs_checks")[0])
    assert "0.25 (min 0.02)" in passed
    assert "0.012 (min 0.02)" in failed
    assert "% unexpected" not in passed + failed


def test_the_root_index_says_pass_or_fail_per_night(docs_root):
    index = (docs_root / "index.html").read_text()
    rows = {
        ds: re.search(rf'href="ds={ds.isoformat()}/index.html".*?</a>', index, re.S).group(0) for ds in DAYS
    }
    assert ">passed<" in rows[DAYS[0]] and ">failed<" not in rows[DAYS[0]]
    assert ">failed<" in rows[DAYS[1]]
    assert "recommendations" in rows[DAYS[1]]
