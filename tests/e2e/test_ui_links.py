"""After one night, the pages people open answer their questions, and every link in them opens.

A real Prefect server (the test harness's), then a real MLflow server and `nightrec pages`, started the way
`nightrec serve` starts them, over the night's home.
"""

from __future__ import annotations

import os
import re
from datetime import date

import httpx
import mlflow
import pytest

from nightrec import registry
from nightrec.ops.local_stack import LocalStack, _stop
from nightrec.settings import Settings
from tests.unit.serving import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUN_DATE = date(2026, 11, 22)
LINK = re.compile(r"\]\((https?://[^)\s]+)\)")


@pytest.fixture
def ui_env(nightrec_env, monkeypatch):
    monkeypatch.setenv("NIGHTREC_UI__MLFLOW_PORT", str(free_port()))
    monkeypatch.setenv("NIGHTREC_UI__PAGES_PORT", str(free_port()))
    return nightrec_env


def _parent_artifacts(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        run = client.read_flow_run(flow_run_id)
    return {"run": run, "artifacts": {a.key: a for a in found}}


def test_the_parent_run_carries_the_night_and_every_link_in_it_opens(prefect_harness, ui_env, e2e_raw):
    from flows.nightly import nightly
    from schemas.params import NightlyParams

    state = nightly(NightlyParams(run_date=RUN_DATE, data=str(e2e_raw)), return_state=True)
    assert state.is_completed(), state.message
    parent = _parent_artifacts(state.state_details.flow_run_id)
    assert parent["run"].name == f"nightly-{RUN_DATE}"
    artifacts = parent["artifacts"]
    # The night's page, and links to its report and evaluation, hang on the parent run itself.
    assert {"night", "night-report-page", "mlflow-evaluation"} <= set(artifacts)
    page = artifacts["night"].data
    assert f"## Night {RUN_DATE}: new lists live" in page
    for stage in ("validate_raw", "train_retrieval", "evaluate_and_promote", "publish"):
        assert f"| {stage} |" in page
    assert "vNone" not in page and "file://" not in page and "sqlite:" not in page
    # A link artifact's data is its Markdown link.
    urls = {u for a in artifacts.values() if isinstance(a.data, str) for u in LINK.findall(a.data)}
    assert {u for k in ("night-report-page", "mlflow-evaluation") for u in LINK.findall(artifacts[k].data)}
    assert any("/data-docs/" in u for u in urls) and any("/#/experiments/" in u for u in urls)

    settings = Settings()
    stack = LocalStack("", "", dict(os.environ), settings.home / "logs")
    stack.logs.mkdir(parents=True, exist_ok=True)
    try:
        stack.start_mlflow_ui(
            settings.ui.mlflow_port, settings.mlflow_tracking_uri, settings.mlflow_artifact_root
        )
        stack.start_pages(settings.ui.pages_port)
        with httpx.Client(timeout=30) as http:
            for url in sorted(urls):
                r = http.get(url)
                assert r.status_code == 200, (url, r.status_code, r.text[:300])
                # A browser's MLflow link carries its object in the fragment: the object must exist too.
                if m := re.search(r"/#/experiments/(\w+)/runs/(\w+)", url):
                    api = f"{settings.ui.mlflow_url}/api/2.0/mlflow/runs/get"
                    run = http.get(api, params={"run_id": m.group(2)})
                    assert run.status_code == 200 and run.json()["run"]["info"]["experiment_id"] == m.group(1)
                elif m := re.search(r"/#/models/([^/]+)/versions/(\d+)", url):
                    api = f"{settings.ui.mlflow_url}/api/2.0/mlflow/model-versions/get"
                    mv = http.get(api, params={"name": m.group(1), "version": m.group(2)})
                    assert mv.status_code == 200, url
                elif "/data-docs/" in url or "/reports/" in url:
                    assert "<html" in r.text.lower()
        _mlflow_pages_hold_the_night(settings, http_base=settings.ui.mlflow_url)
    finally:
        _stop(stack.processes)


def _mlflow_pages_hold_the_night(settings: Settings, http_base: str) -> None:
    """Through the MLflow server's REST API, as its UI reads it: the night's parent run with every run of
    the night nested under it and named with the date, and model versions with tags and named signatures."""
    api = f"{http_base}/api/2.0/mlflow"
    with httpx.Client(timeout=30) as http:
        exp = http.get(
            f"{api}/experiments/get-by-name", params={"experiment_name": settings.mlflow_experiment}
        )
        experiment = exp.json()["experiment"]
        tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        assert tags["mlflow.experimentKind"] == "custom_model_development" and tags["mlflow.note.content"]
        found = http.post(f"{api}/runs/search", json={"experiment_ids": [experiment["experiment_id"]]}).json()
        runs = {r["info"]["run_name"]: r for r in found["runs"]}
        parent = runs[f"night-{RUN_DATE}"]["info"]["run_id"]
        children = {
            name
            for name, r in runs.items()
            if {t["key"]: t["value"] for t in r["data"].get("tags", [])}.get("mlflow.parentRunId") == parent
        }
        assert {
            f"nightrec-retrieval-{RUN_DATE}",
            f"nightrec-ranking-{RUN_DATE}",
            f"evaluate-{RUN_DATE}",
            f"gate-raw-{RUN_DATE}",
            f"gate-recommendations-{RUN_DATE}",
        } <= children, children
        evaluation_id = runs[f"evaluate-{RUN_DATE}"]["info"]["run_id"]
        evaluation = http.get(f"{api}/runs/get", params={"run_id": evaluation_id}).json()["run"]
        judged = {m["model_id"] for m in evaluation["inputs"].get("model_inputs", [])}
        assert len(judged) == 2, "the evaluation names the two model versions it judged"
        assert any(
            d["dataset"]["name"] == f"holdout-{RUN_DATE}" for d in evaluation["inputs"]["dataset_inputs"]
        )
        for name in ("nightrec-retrieval", "nightrec-ranking"):
            mv = http.get(f"{api}/model-versions/get", params={"name": name, "version": "1"}).json()
            mv = mv["model_version"]
            mv_tags = {t["key"]: t["value"] for t in mv.get("tags", [])}
            assert mv_tags["nightrec.ds"] == str(RUN_DATE) and "decision" in mv_tags, (name, mv_tags)
            assert f"heldout_{settings.promotion.metric}" in mv_tags
            assert "Trained for run date" in mv["description"] and "Evaluated on" in mv["description"]
            registry.connect(settings)
            signature = mlflow.models.get_model_info(f"models:/{name}/1").signature
            assert signature.inputs.input_names()[0].startswith("user_idx, segment_idx"), name
