"""The precompute stage: champion models from the registry, every user scored, provenance written beside."""

from __future__ import annotations

import hashlib
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


def precompute_with_champions(settings: Settings, ds: date, force: bool = False) -> dict:
    """Score every user with the champions and write ``recs`` for ``ds``, with provenance in ``_META.json``.

    A re-run for the same features, champions and scoring settings changes nothing and returns the earlier
    provenance (``skipped: true``): the lists already written may have been validated since, and rewriting
    them would drop that validation from under the publish stage. Event triggers are at-least-once, so a
    duplicate run is expected, not exceptional. ``force`` scores again regardless.
    """
    tracking.configure_mlflow(
        settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow_experiment
    )
    refs = champion_refs()
    features = lake.read_marker(lake.partition_path(settings.lake, "interactions", ds)) or {}
    fp = ":".join(
        (
            str(features.get("fingerprint")),
            refs[RETRIEVAL]["version"],
            refs[RANKING]["version"],
            hashlib.sha256(settings.scoring.model_dump_json().encode()).hexdigest()[:16],
        )
    )
    meta_path = lake.partition_path(settings.lake, "recs", ds) / META
    if not force and lake.is_complete(settings.lake, "recs", ds, fp) and meta_path.exists():
        return {**json.loads(meta_path.read_text()), "skipped": True}
    models = [
        mlflow.pytorch.load_model(f"models:/{n}/{refs[n]['version']}", map_location="cpu")
        for n in (RETRIEVAL, RANKING)
    ]
    summary = precompute(settings, ds, *models, fingerprint=fp)
    body = {
        "models": refs,
        "input_fingerprints": {"features": features.get("fingerprint")},
        **asdict(summary),
    }
    lake.write_json(meta_path, body)  # atomic: a skip reads it back
    return {**body, "skipped": False}
