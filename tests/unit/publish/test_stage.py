"""The publish stage only lets lists through that validate_recs judged, and judged as they are now."""

from __future__ import annotations

import json
from datetime import date

import pytest

from nightrec.errors import GateFailed, StageInputMissing
from nightrec.io import lake
from nightrec.io.store import open_store
from nightrec.publish import pointer
from nightrec.publish.stage import publish_recs
from nightrec.scoring.stage import META
from nightrec.validation.gates import VALIDATION
from schemas.results import ChosenPolicy, Promotion
from tests.unit.publish import write_recs

DS = date(2026, 11, 22)


def _partition(settings, *, verdict: dict | None, fingerprint: str = "fp-1"):
    path = lake.partition_path(settings.lake, "recs", DS)
    write_recs(path, n_users=12, k=settings.scoring.top_k)
    lake.write_marker(path, fingerprint)
    (path / META).write_text(json.dumps({"models": {"nightrec-retrieval": {"version": "3", "run_id": "r3"}}}))
    if verdict is not None:
        (path / VALIDATION).write_text(json.dumps(verdict))
    return path


def test_publishes_validated_lists_and_records_provenance(settings):
    settings.scoring.top_k = 3
    _partition(settings, verdict={"success": True, "recs_fingerprint": "fp-1", "data_docs": "/docs"})
    promotion = Promotion(
        promoted=True,
        reason="test",
        metric="ndcg_at_10",
        policy=ChosenPolicy(name="popularity_7d", kind="popularity", candidate="popularity_7d"),
    )
    out = publish_recs(settings, DS, "run-a", promotion)
    store = open_store(settings.store)
    live, _ = pointer.read_live(store)
    assert live.manifest_key == out.manifest_key and out.generation == 1
    manifest = json.loads(store.get_bytes(out.manifest_key))
    assert manifest["counts"]["users"] == 12 and manifest["top_k"] == 3
    assert manifest["models"]["nightrec-retrieval"]["version"] == "3"
    assert manifest["mlflow_run_ids"] == {"nightrec-retrieval": "r3"}
    assert manifest["validation"]["success"] is True
    assert manifest["extra"]["promotion"]["promoted"] is True
    assert Promotion(**manifest["extra"]["promotion"]) == promotion


@pytest.mark.parametrize(
    ("verdict", "error", "message"),
    [
        (None, StageInputMissing, "never validated"),
        ({"success": False, "recs_fingerprint": "fp-1"}, GateFailed, "was a failure"),
        ({"success": True, "recs_fingerprint": "fp-0"}, GateFailed, "rewritten after validation"),
    ],
)
def test_refuses_lists_without_a_matching_passing_verdict(settings, verdict, error, message):
    _partition(settings, verdict=verdict)
    with pytest.raises(error, match=message):
        publish_recs(settings, DS, "run-b")
    assert pointer.read_live(open_store(settings.store)) is None, "nothing may go live"


def test_refuses_a_partition_without_a_completion_marker(settings):
    path = lake.partition_path(settings.lake, "recs", DS)
    write_recs(path, n_users=3, k=2)
    with pytest.raises(StageInputMissing, match="no completion marker"):
        publish_recs(settings, DS, "run-c")


def test_an_older_date_is_published_but_never_moves_the_pointer_back(settings):
    settings.scoring.top_k = 3
    newer = DS.replace(day=23)
    for ds in (newer, DS):
        path = lake.partition_path(settings.lake, "recs", ds)
        write_recs(path, n_users=4, k=3)
        lake.write_marker(path, f"fp-{ds}")
        (path / VALIDATION).write_text(json.dumps({"success": True, "recs_fingerprint": f"fp-{ds}"}))
    first = publish_recs(settings, newer, "run-new")
    older = publish_recs(settings, DS, "run-old")
    store = open_store(settings.store)
    assert first.live is True and older.live is False
    assert pointer.read_live(store)[0].manifest_key == first.manifest_key
    assert store.head(older.manifest_key) is not None
