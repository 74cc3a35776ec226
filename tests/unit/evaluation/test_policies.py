"""The live policy in the MLflow registry (SQLite): versions, the champion alias, and registries from before."""

from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from nightrec import registry
from nightrec.scoring import policies
from nightrec.scoring.policies import Policy
from nightrec.training.stages import RANKING, RETRIEVAL


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    previous = mlflow.get_tracking_uri()
    registry.configure_mlflow(f"sqlite:///{tmp_path}/mlflow.db", (tmp_path / "artifacts").as_uri(), "test")
    yield
    mlflow.set_tracking_uri(previous)


def _register(policy: Policy, reason: str = "test") -> str:
    with mlflow.start_run() as run:
        return policies.register(policy, run.info.run_id, reason)


def test_policy_names_and_kinds():
    assert Policy("popularity", {"window_days": 30}).name == "popularity_30d"
    assert Policy("popularity", {"window_days": 0}).name == "popularity_all"
    assert Policy.learned(3, 4).params == {"retrieval": "3", "ranking": "4"}
    assert Policy.from_dict(Policy("ease", {"l2": 2000.0}).as_dict()) == Policy("ease", {"l2": 2000.0})
    with pytest.raises(ValueError, match="unknown policy kind 'als'"):
        Policy("als")


def test_a_baseline_champion_is_a_registry_version_and_moves_no_model_alias(store):
    assert policies.champion() is None  # nothing promoted yet
    version = _register(Policy("ease", {"l2": 500.0}), "first champion: ease")
    policies.promote(version)
    live = policies.champion()
    assert live == policies.LivePolicy(Policy("ease", {"l2": 500.0}), version)
    mv = MlflowClient().get_model_version(policies.POLICY_MODEL, version)
    assert mv.description == "first champion: ease" and mv.tags["name"] == "ease"
    assert registry.get_alias_version(RETRIEVAL, "champion") is None


def test_a_learned_champion_moves_both_model_aliases_and_a_later_baseline_replaces_it(store):
    client = MlflowClient()
    for name in (RETRIEVAL, RANKING):  # two registered versions to point at (their source is irrelevant here)
        client.create_registered_model(name)
        for _ in range(2):
            with mlflow.start_run() as run:
                mlflow.log_dict({}, "m/x.json")
            client.create_model_version(name, f"{run.info.artifact_uri}/m", run.info.run_id)
    learned = _register(Policy.learned(2, 1))
    policies.promote(learned)
    assert policies.champion().policy == Policy.learned(2, 1)
    assert registry.get_alias_version(RETRIEVAL, "champion") == "2"
    assert registry.get_alias_version(RANKING, "champion") == "1"
    pop = _register(Policy("popularity", {"window_days": 30}))
    policies.promote(pop)
    assert policies.champion().policy.name == "popularity_30d" and int(pop) == int(learned) + 1


def test_a_registry_from_before_policies_serves_its_learned_champions(store):
    client = MlflowClient()
    for name in (RETRIEVAL, RANKING):
        client.create_registered_model(name)
        with mlflow.start_run() as run:
            mlflow.log_dict({}, "m/x.json")
        client.create_model_version(name, f"{run.info.artifact_uri}/m", run.info.run_id)
        registry.set_alias(name, "champion", "1")
    assert policies.champion() == policies.LivePolicy(Policy.learned(1, 1), None)
