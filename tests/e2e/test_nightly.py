"""The whole nightly pipeline twice on tiny generated data: real Spark, GE, torch, MLflow (SQLite), Prefect.

The first night goes through the CLI exactly as a user runs it; the second calls the `nightly` flow directly
and must move the live pointer to a new snapshot while keeping the first.
"""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from nightrec import registry
from nightrec.io import lake
from nightrec.io.store import open_store
from nightrec.publish import pointer, snapshot
from nightrec.publish.reader import LiveRecs, verify_live
from nightrec.scoring import policies
from nightrec.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOP_K = 10
RUN_DATE = "2026-11-22"


@pytest.fixture
def e2e_env(nightrec_env, monkeypatch):
    monkeypatch.setenv("NIGHTREC_TRAIN__RETRIEVAL_EPOCHS", "4")
    monkeypatch.setenv("NIGHTREC_TRAIN__RANKING_EPOCHS", "2")
    monkeypatch.setenv("NIGHTREC_SCORING__TOP_K", str(TOP_K))
    return nightrec_env


def _seen(raw) -> pd.DataFrame:
    ev = pd.read_parquet(raw / "events")
    ev = ev[(ev["event_type"] != "impression") & (ev["ts"] < pd.Timestamp(RUN_DATE, tz="UTC"))]
    return ev[["user_id", "item_id"]].drop_duplicates()


def test_two_nights_publish_validated_lists_and_keep_history(prefect_harness, e2e_env, e2e_raw):
    from flows.nightly import nightly
    from nightrec.cli import app
    from schemas.params import NightlyParams

    settings = Settings()
    runner = CliRunner()

    # Night 1, as a user runs it.
    res = runner.invoke(app, ["run", "--data", str(e2e_raw), "--date", RUN_DATE])
    assert res.exit_code == 0, res.output
    assert "Live recommendations" in res.output and "mlflow ui --backend-store-uri" in res.output
    assert "Data Docs" in res.output
    assert (Path(settings.data_docs) / "index.html").exists()
    last = json.loads((settings.home / "last_run.json").read_text())
    assert last["status"] == "completed"
    first_key = last["publish"]["manifest_key"]

    store = open_store(settings.store)
    live, _ = pointer.read_live(store)
    assert live.manifest_key == first_key and live.generation == 1 and live.previous is None
    manifest = verify_live(store)  # every part present with its checksum

    # Every user with history has exactly K unseen, available recommendations; cold users get the fallback.
    recs = pd.concat(pd.read_parquet(io.BytesIO(store.get_bytes(p.key))) for p in manifest.parts)
    users = pd.read_parquet(e2e_raw / "users")
    assert set(recs["user_id"]) == set(users["user_id"])
    per_user = recs.groupby("user_id").size()
    assert (per_user == TOP_K).all()
    assert not recs.duplicated(["user_id", "item_id"]).any()
    seen = _seen(e2e_raw)
    clash = recs.merge(seen, on=["user_id", "item_id"])
    assert clash.empty, clash.head()
    items = pd.read_parquet(e2e_raw / "items")
    assert set(recs["item_id"]) <= set(items.loc[items["available"], "item_id"])
    active = set(pd.read_parquet(e2e_raw / "events")["user_id"])
    cold = set(users["user_id"]) - active
    assert cold, "the generator plants users without history"
    fallback_users = set(recs.loc[recs["source"] == "fallback", "user_id"])
    assert fallback_users == cold
    assert manifest.counts["fallback_users"] == len(cold)
    assert manifest.counts["users"] == len(users)
    assert LiveRecs(store).recs(sorted(active)[0])[0]["rank"] == 1

    # MLflow: a run per model with per-epoch curves and a logged model, registered as challengers.
    registry.connect(settings)
    client = MlflowClient()
    trained = {}
    for name, epochs in (("nightrec-retrieval", 4), ("nightrec-ranking", 2)):
        version = trained[name] = registry.get_alias_version(name, "challenger")
        assert version is not None, f"{name} has no challenger"
        run = client.get_run(client.get_model_version(name, str(version)).run_id)
        assert run.data.params, name
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert 1 <= len(history) <= epochs
    # The two-tower's serving twin (refit on every window) is registered beside it, from the same run, with
    # no alias of its own: the evaluated version names it.
    twin = registry.serving_version("nightrec-retrieval", trained["nightrec-retrieval"])
    assert twin is not None and twin != trained["nightrec-retrieval"]
    twin_mv = client.get_model_version("nightrec-retrieval", twin)
    assert twin_mv.tags[registry.SERVES_FOR_TAG] == trained["nightrec-retrieval"] and not twin_mv.aliases
    assert (
        twin_mv.run_id == client.get_model_version("nightrec-retrieval", trained["nightrec-retrieval"]).run_id
    )
    evaluation = mlflow.search_runs(
        experiment_names=[settings.mlflow_experiment], filter_string="tags.`nightrec.stage` = 'evaluate'"
    )
    assert len(evaluation) == 1
    run = evaluation.iloc[0]
    # Every candidate was measured on the same users, and the live policy is the best of them by the gate.
    ease_name = "ease_recent" if "metrics.ease_recent.ndcg_at_10" in run else "ease"
    names = ("challenger", "popularity_7d", "popularity_30d", "popularity_all", ease_name)
    scores = {n: run[f"metrics.{n}.ndcg_at_10"] for n in names}
    live_policy = policies.champion()
    assert live_policy is not None and live_policy.version is not None
    assert last["evaluate_and_promote"]["policy"]["name"] == live_policy.policy.name == run["tags.policy"]
    assert (
        manifest.policy["name"] == live_policy.policy.name
        and manifest.policy["version"] == live_policy.version
    )
    assert f"live policy: {live_policy.policy.name}" in res.output
    live_name = last["evaluate_and_promote"]["policy"]["candidate"]
    best_baseline = max((n for n in names if n != "challenger"), key=scores.get)
    if live_policy.policy.kind == "learned":  # a learned policy goes live only by beating every baseline
        assert scores["challenger"] > scores[best_baseline]
        assert manifest.models["nightrec-retrieval"]["version"] == twin
    else:
        assert live_name == best_baseline and manifest.models == {}

    ds = date.fromisoformat(RUN_DATE)
    recs_marker = lake.read_marker(lake.partition_path(settings.lake, "recs", ds))
    assert recs_marker is not None

    # Night 2, same inputs: features and both models are reused (nothing that shapes them changed), the gate
    # still decides, and the pointer moves forward to a new generation.
    out = nightly(NightlyParams(data=str(e2e_raw), run_date=RUN_DATE))
    assert out.build_features.skipped is True
    for ref, name in ((out.train_retrieval, "nightrec-retrieval"), (out.train_ranking, "nightrec-ranking")):
        assert ref.reused is True, name
        assert ref.version == trained[name], name
    promo = out.evaluate_and_promote
    assert promo.challenger["serving_retrieval"] == twin
    # The same inputs measure the same: the live policy stays, and no new policy version is registered.
    assert promo.promoted is False and promo.policy.name == live_policy.policy.name
    assert policies.champion() == live_policy
    # Same features, champions and scoring settings: the lists validated tonight are not rewritten under the
    # publish stage (an event trigger may run precompute twice).
    assert out.precompute.skipped is True
    assert lake.read_marker(lake.partition_path(settings.lake, "recs", ds)) == recs_marker
    live2, _ = pointer.read_live(store)
    assert live2.generation == 2 and live2.manifest_key != first_key
    assert live2.previous == first_key
    changes = out.publish.changes
    assert changes.users_compared > 0 and 0.0 <= changes.mean_overlap_at_k <= 1.0
    assert store.head(first_key) is not None, "the previous snapshot must stay"
    assert snapshot.load_manifest(store, first_key).generation == 1
    verify_live(store)

    # The reader commands follow the pointer to the new snapshot.
    user = sorted(active)[0]
    shown = runner.invoke(app, ["recs", user])
    assert shown.exit_code == 0, shown.output
    assert LiveRecs(store).recs(user)[0]["item_id"] in shown.output
    status = runner.invoke(app, ["status"])
    assert status.exit_code == 0 and "generation=2" in status.output, status.output
    assert runner.invoke(app, ["recs", "no-such-user"]).exit_code == 1

    # Other scoring settings are another input, and `force` scores again whatever the inputs.
    from nightrec.scoring import stage

    shorter = settings.model_copy(
        update={"scoring": settings.scoring.model_copy(update={"top_k": TOP_K - 5})}
    )
    again = stage.precompute_with_champions(shorter, ds)
    assert again.skipped is False and again.rows == (TOP_K - 5) * len(users)
    assert (
        lake.read_marker(lake.partition_path(settings.lake, "recs", ds))["fingerprint"]
        != recs_marker["fingerprint"]
    )
    assert stage.precompute_with_champions(shorter, ds).skipped is True
    assert stage.precompute_with_champions(shorter, ds, force=True).skipped is False

    # A learned policy is scored by its serving twin and the ranker the gate measured; provenance names both.
    learned = policies.Policy.learned(trained["nightrec-retrieval"], trained["nightrec-ranking"], twin)
    policies.promote(
        policies.register(learned, client.get_model_version("nightrec-retrieval", twin).run_id, "t")
    )
    scored = stage.precompute_with_champions(settings, ds)
    assert scored.skipped is False and scored.policy["name"] == "learned"
    served = scored.models["nightrec-retrieval"]
    assert (served.version, served.evaluated_version) == (twin, trained["nightrec-retrieval"])
    assert scored.models["nightrec-ranking"].version == trained["nightrec-ranking"]

    # Rollback sticks. A third snapshot is made by a baseline the gate did not choose; rolling it back makes
    # night 1's policy the champion again, and a night re-run after it cannot bring those lists back.
    night1 = live_policy.policy
    rolled = policies.Policy("popularity", {"window_days": 7 if night1.name != "popularity_7d" else 0})
    policies.promote(
        policies.register(rolled, client.get_model_version("nightrec-retrieval", twin).run_id, "t")
    )
    stage.precompute_with_champions(settings, ds)
    out = nightly(NightlyParams(data=str(e2e_raw), run_date=RUN_DATE, stages=["validate_recs", "publish"]))
    third = pointer.read_live(store)[0]
    assert (
        third.generation == 3
        and snapshot.load_manifest(store, third.manifest_key).policy["name"] == rolled.name
    )
    res = runner.invoke(app, ["rollback"])
    assert res.exit_code == 0, res.output
    assert pointer.read_live(store)[0].manifest_key == live2.manifest_key
    assert policies.champion() == live_policy, "the champion goes back with the lists"
    assert f"live policy: {night1.name}" in res.output and "rejected" in res.output
    assert policies.is_rejected(rolled, RUN_DATE) and not policies.is_rejected(rolled, "2026-11-23")
    out = nightly(
        NightlyParams(
            data=str(e2e_raw),
            run_date=RUN_DATE,
            stages=["evaluate_and_promote", "precompute", "validate_recs", "publish"],
        )
    )
    assert rolled.name in out.evaluate_and_promote.rejected
    fourth = snapshot.load_manifest(store, pointer.read_live(store)[0].manifest_key)
    assert fourth.generation == 4 and fourth.policy["name"] != rolled.name
