"""Skip a training stage whose inputs, settings and code have not changed since a finished run.

A night that failed after training (say in precompute) is re-run without retraining, and so is a re-run of a
night that succeeded: the registered version is reused and made `challenger` again. The key covers everything
that shapes the model: the examples' fingerprint, the run date, the feature and training settings, the code
version, the earlier night's version it warm-starts from and, for the ranker, the two-tower version it learns
from.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import date

from nightrec import registry
from nightrec.io import lake
from nightrec.settings import Settings
from nightrec.training import stages
from nightrec.training.process_group import World
from schemas.results import CHALLENGER, ModelTrained
from schemas.tables import RANKING_EXAMPLES, RETRIEVAL_EXAMPLES

REUSE_TAG = "nightrec.reuse_key"
log = logging.getLogger(__name__)

# What each model trains on, and the stage that trains it.
_EXAMPLES = {stages.RETRIEVAL: RETRIEVAL_EXAMPLES.name, stages.RANKING: RANKING_EXAMPLES.name}
TRAINERS: dict[str, Callable[..., ModelTrained]] = {
    stages.RETRIEVAL: stages.train_retrieval,
    stages.RANKING: stages.train_ranking,
}


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
        "code": registry.code_version(),
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def key_for(settings: Settings, ds: date, model_name: str) -> str:
    """The reuse key of ``model_name`` tonight. The ranker learns from the two-tower `challenger`, so that
    version is part of its key; it is read from the registry MLflow points at, so call this only after
    ``configure_mlflow`` (read earlier it came from MLflow's default store, and a new two-tower did not change
    the ranker's key)."""
    extra = {}
    if model_name == stages.RANKING:
        extra["two_tower"] = registry.get_alias_version(stages.RETRIEVAL, CHALLENGER)
    # The weights it starts from: an earlier night's version, so a re-run of tonight finds the same one.
    if settings.train.warm_start and (source := registry.latest_trained_before(model_name, ds.isoformat())):
        extra["warm_from"] = source
    return reuse_key(settings, ds, model_name, _EXAMPLES[model_name], extra or None)


def train_or_reuse(
    settings: Settings,
    ds: date,
    model_name: str,
    tags: dict[str, str],
    force: bool = False,
    world: World | None = None,
) -> ModelTrained:
    """Tonight's `challenger` of ``model_name``: the version trained under tonight's key, or a new one.

    The one path of every training entry point: a stage task calls it with no ``world`` (one process); with
    ``train.processes`` > 1 it launches them (:mod:`nightrec.training.launch`, torchrun), and each of those
    calls it again inside its ``world``, where rank 0 decides and the others follow.

    Args:
        settings: Locations and training knobs.
        ds: Run date.
        model_name: ``nightrec-retrieval`` or ``nightrec-ranking``.
        tags: Tags of a new training run (the reuse key is added).
        force: Train even when a version of tonight's key exists.
        world: This process's place among several training processes; None = this process alone.
    """
    world = world or World()
    found, key = None, None
    if world.is_main:
        registry.connect(settings)
        key = key_for(settings, ds, model_name)
        if not force and (found := find_trained(model_name, key)):
            log.info("%s: inputs, settings and code unchanged; reusing version %s", model_name, found.version)
    found = world.broadcast(found)
    if found is not None:
        return found
    if settings.train.processes > 1 and not world.distributed:
        from nightrec.training import launch  # the launcher imports this module's callers

        return launch.torchrun(settings, ds, model_name, {**tags, REUSE_TAG: key})
    return TRAINERS[model_name](settings, ds, {**tags, REUSE_TAG: key} if key else tags, world=world)


def find_trained(model_name: str, key: str) -> ModelTrained | None:
    """The newest registered version trained under ``key`` by a finished run, made `challenger` again; or None."""
    for run_id, metrics in registry.finished_runs_tagged(REUSE_TAG, key):
        # The run's serving twin is registered from it too; the version to reuse is the one it serves for.
        found = dict(registry.versions_of_run(model_name, run_id))
        found = {v: tags for v, tags in found.items() if registry.SERVES_FOR_TAG not in tags}
        if found:
            version = max(found, key=int)
            registry.set_alias(model_name, CHALLENGER, version)
            twin = found[version].get(registry.SERVING_VERSION_TAG)
            return ModelTrained(
                name=model_name,
                version=version,
                run_id=run_id,
                serving_version=twin,
                metrics=metrics,
                reused=True,
            )
    return None
