"""The parent run's page of a night: every stage on one line, links a browser opens, a stopped night's reason."""

from __future__ import annotations

import re

from nightrec.ops import night_summary
from nightrec.settings import Settings
from schemas.params import STAGES
from schemas.results import GateSummary, NightResult, Publication

LINK = re.compile(r"\]\(([^)]+)\)")


def _gate(settings: Settings, gate: str) -> GateSummary:
    docs = f"{settings.data_docs}/ds=2026-11-22/index.html"
    return GateSummary(gate=gate, success=True, data_docs=docs, mlflow_run_id="abc123")


def test_a_published_night_has_a_row_per_stage_and_only_http_links(tmp_path):
    s = Settings(home=tmp_path)
    result = NightResult(
        run_date="2026-11-22",
        seconds={"validate_raw": 3.25, "publish": 1.0},
        validate_raw=_gate(s, "raw"),
        publish=Publication(
            store=s.store, manifest_key="recs/ds=2026-11-22/run=x/manifest.json", pointer_key="recs/_live.json",
            live=True, generation=3,
        ),
    )  # fmt: skip
    page = night_summary.markdown(s, result, "7")
    assert page.startswith("## Night 2026-11-22: new lists live")
    rows = [line for line in page.splitlines() if re.match(r"^\| \d ", line)]
    assert [r.split("|")[2].strip() for r in rows] == list(STAGES)
    assert "| 1 | validate_raw | 3.2 | passed" in page
    assert "| 4 | train_retrieval |  | not run |" in page
    assert "live, generation 3" in page
    urls = LINK.findall(page)
    assert f"{s.ui.pages_url}/data-docs/ds=2026-11-22/index.html" in urls
    assert f"{s.ui.mlflow_url}/#/experiments/7/runs/abc123?workflowType=machine_learning" in urls
    assert all(u.startswith("http://") for u in urls), urls


def test_a_stopped_night_says_where_and_why_and_links_the_failed_gate(tmp_path):
    s = Settings(home=tmp_path)
    result = NightResult(run_date="2026-11-22", seconds={"validate_raw": 2.0}, validate_raw=_gate(s, "raw"))
    page = night_summary.markdown(
        s,
        result,
        None,
        failed=("validate_features", "gate 'features' failed: 2 rule(s) broken | see docs"),
        failed_docs=f"{s.data_docs}/ds=2026-11-22/index.html",
    )
    assert page.startswith(
        "## Night 2026-11-22: **FAILED** at `validate_features`; the live lists were not changed"
    )
    assert (
        "| 3 | validate_features |  | **failed**: gate 'features' failed: 2 rule(s) broken \\| see docs |"
        in page
    )
    assert f"[Data Docs of the failed gate]({s.ui.pages_url}/data-docs/ds=2026-11-22/index.html)" in page
    assert "| 9 | publish |  | not run |" in page
    assert "/#/experiments/" not in page  # no MLflow experiment known: no MLflow link rather than a dead one


def test_data_docs_outside_the_deployments_folder_get_no_link(tmp_path):
    s = Settings(home=tmp_path)
    gate = GateSummary(gate="raw", success=True, data_docs="/elsewhere/index.html")
    page = night_summary.markdown(s, NightResult(run_date="2026-11-22", validate_raw=gate), None)
    assert "/elsewhere" not in page and "| 1 | validate_raw |  | passed · Data Docs |" in page
