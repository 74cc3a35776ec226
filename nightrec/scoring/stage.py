"""The precompute stage: champion models from the registry, every user scored, provenance written beside."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date

import mlflow
from mlflow import MlflowClient

from nightrec.evaluation.promotion import RANKING, RETRIEVAL
from nightrec.io import lake
from nightrec.scoring.precompute import precompute
from nightrec.settings import Settings
from nightrec.training import tracking

META = "_META.json"


def champion_refs() -> dict[str, dict]:
    """{name: {version, run_id}} of the champion models.

    Raises:
        RuntimeError: a model has no champion yet (the first challenger did not beat popularity).
    """
    client = MlflowClient()
    refs = {}
    for name in (RETRIEVAL, RANKING):
        version = tracking.get_alias_version(name, "champion")
        if version is None:
            raise RuntimeError(
                f"registered model {name!r} has no 'champion' alias: no model has passed the promotion gate yet, "
                "so there is nothing to serve (see the evaluate-and-promote stage's decision)"
            )
        refs[name] = {"version": str(version), "run_id": client.get_model_version(name, str(version)).run_id}
    return refs


def precompute_with_champions(settings: Settings, ds: date) -> dict:
    tracking.configure_mlflow(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow_experiment
    )
    refs = champion_refs()
    models = [
        mlflow.pytorch.load_model(f"models:/{n}/{refs[n]['version']}", map_location="cpu")
        for n in (RETRIEVAL, RANKING)
    ]
    features = lake.read_marker(lake.partition_path(settings.lake, "interactions", ds)) or {}
    fp = f"{features.get('fingerprint')}:{refs[RETRIEVAL]['version']}:{refs[RANKING]['version']}"
    summary = precompute(settings, ds, *models, fingerprint=fp)
    body = {
        "models": refs,
        "input_fingerprints": {"features": features.get("fingerprint")},
        **asdict(summary),
    }
    (lake.partition_path(settings.lake, "recs", ds) / META).write_text(json.dumps(body, indent=2))
    return body
