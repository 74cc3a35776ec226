"""Skip a training stage whose inputs, settings and code have not changed since a finished run.

A night that failed after training (say in precompute) is re-run without retraining, and so is a re-run of a
night that succeeded: the registered version is reused and made `challenger` again. The key covers everything
that shapes the model: the examples' fingerprint, the run date, the feature and training settings, the code
version and, for the ranker, the two-tower version it learns from.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date

import mlflow
from mlflow import MlflowClient

from nightrec.io import lake
from nightrec.settings import Settings
from nightrec.training import tracking

REUSE_TAG = "nightrec.reuse_key"


def reuse_key(
    settings: Settings, ds: date, model_name: str, examples_table: str, extra: dict | None = None
) -> str:
    """A digest of what determines the trained model (see the module docstring)."""
    marker = lake.read_marker(lake.partition_path(settings.lake, examples_table, ds)) or {}
    body = {
        "model": model_name,
        "ds": ds.isoformat(),
        "examples": marker.get("fingerprint"),
        "features": settings.features.model_dump(mode="json"),
        "train": settings.train.model_dump(mode="json"),
        "code": tracking.code_version(),
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def find_trained(model_name: str, key: str) -> dict | None:
    """The newest registered version trained under ``key`` by a finished run, as a model reference, or None."""
    runs = mlflow.search_runs(
        filter_string=f"tags.`{REUSE_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )
    client = MlflowClient()
    for run in runs:
        found = client.search_model_versions(f"name = '{model_name}' and run_id = '{run.info.run_id}'")
        # The run's serving twin is registered from it too; the version to reuse is the one it serves for.
        versions = [mv for mv in found if tracking.SERVES_FOR_TAG not in mv.tags]
        if versions:
            v = max(versions, key=lambda mv: int(mv.version))
            tracking.set_alias(model_name, "challenger", v.version)
            return {
                "name": model_name,
                "version": str(v.version),
                "run_id": run.info.run_id,
                "serving_version": v.tags.get(tracking.SERVING_VERSION_TAG),
                "metrics": dict(run.data.metrics),
                "reused": True,
            }
    return None
