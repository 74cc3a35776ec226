"""A degenerate challenger (everyone gets the same popular items) that the promotion gate lets through by a set
tolerance is stopped by the recs gate's change rules, and the live lists stay as they were."""

from __future__ import annotations

from pathlib import Path

import pytest

from nightrec.errors import GateFailed
from nightrec.io.store import open_store
from nightrec.publish import pointer, snapshot
from nightrec.settings import Settings
from tests.e2e.test_nightly import TOP_K

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

FIRST, SECOND = "2026-11-21", "2026-11-22"


@pytest.fixture
def learned_only(nightrec_env, monkeypatch):
    """Only the learned pair may go live, so both nights compare lists of the same policy."""
    monkeypatch.setenv("NIGHTREC_TRAIN__RETRIEVAL_EPOCHS", "4")
    monkeypatch.setenv("NIGHTREC_TRAIN__RANKING_EPOCHS", "2")
    monkeypatch.setenv("NIGHTREC_SCORING__TOP_K", str(TOP_K))
    monkeypatch.setenv("NIGHTREC_PROMOTION__POPULARITY_WINDOWS", "[]")
    monkeypatch.setenv("NIGHTREC_PROMOTION__EASE", "false")
    return nightrec_env


def test_a_degenerate_challenger_is_stopped_by_gini_and_coverage_and_nothing_live_moves(
    prefect_harness, learned_only, e2e_raw, monkeypatch
):
    from flows.nightly import nightly
    from schemas.params import NightlyParams

    # Night 1 (a past date of the log) publishes the learned lists; their figures become the baseline.
    first = nightly(NightlyParams(data=str(e2e_raw), run_date=FIRST, backfill=True))
    assert first.evaluate_and_promote.policy.name == "learned"
    baseline = first.validate_recs.metrics
    assert {"lists_gini", "lists_coverage", "lists_personalisation"} <= set(baseline)
    store = open_store(Settings().store)
    live_before, _ = pointer.read_live(store)

    # Night 2: a one-dimensional two-tower without the re-ranker ranks every user's items by one scalar, so
    # (its sign aside) everyone gets the same items; the promotion tolerance lets any refreshed pair through.
    monkeypatch.setenv("NIGHTREC_TRAIN__RETRIEVAL_DIM", "1")
    monkeypatch.setenv("NIGHTREC_SCORING__RERANK_WEIGHT", "0")
    monkeypatch.setenv("NIGHTREC_PROMOTION__TOLERANCE", "1.0")
    with pytest.raises(GateFailed) as err:
        nightly(NightlyParams(data=str(e2e_raw), run_date=SECOND))
    message = str(err.value)
    assert err.value.suite == "recommendations"
    assert "change_gini" in message and "change_coverage" in message, message
    assert "against a median of" in message and "policy learned" in message, message
    rules = {f.rule for f in err.value.failures}
    assert {"change_gini", "change_coverage"} <= rules
    # The rules compared with night 1's own figures.
    gini_rule = next(f for f in err.value.failures if f.rule == "change_gini")
    assert f"median of {baseline['lists_gini']:.4g}" in gini_rule.detail, gini_rule.detail
    live_after, _ = pointer.read_live(store)
    assert (
        live_after.manifest_key == live_before.manifest_key
        and live_after.generation == live_before.generation
    )

    # The night report: night 1's beside its snapshot, night 2's (not published) in the lake, showing the rules.
    from typer.testing import CliRunner

    from nightrec.cli import app

    manifest = snapshot.load_manifest(store, live_after.manifest_key)
    published = store.get_bytes(manifest.extra["report"]).decode()
    assert "Night report 2026-11-21" in published and published.count("data:image/png;base64,") >= 3
    assert "Held-out quality by slice" in published and "item_popularity" in published
    res = CliRunner().invoke(app, ["report"])
    assert res.exit_code == 0 and "night report:" in res.output, res.output
    res = CliRunner().invoke(app, ["report", "--date", SECOND])
    assert res.exit_code == 0, res.output
    page = Path(res.output.split("night report:")[1].split()[0]).read_text()
    assert "Night report 2026-11-22" in page and "Stopped by the change rules" in page
    assert "change_gini" in page and 'class="fail"' in page
    assert "Churn against the live lists" in page and "mean Jaccard@K" in page

    # ... and logged to night 1's evaluation run in MLflow, beside the candidates' metrics.
    import mlflow

    from nightrec import registry

    registry.connect(Settings())
    runs = mlflow.search_runs(
        filter_string=f"tags.`nightrec.stage` = 'evaluate' and tags.`nightrec.ds` = '{FIRST}'",
        output_format="list",
    )
    assert len(runs) == 1
    listed = mlflow.MlflowClient().list_artifacts(runs[0].info.run_id, "night_report")
    assert [a.path for a in listed] == ["night_report/_REPORT.html"]
