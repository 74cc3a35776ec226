"""Multi-process (DDP) training of the two models on the lake's examples for one date.

Launch it with torchrun, which starts the processes and describes them in the environment::

    torchrun --nproc-per-node 2 -m nightrec.training.distributed --date 2026-11-20 [--model retrieval]

or let it spawn its own processes on this machine (``--nproc 2``, no torchrun needed). One process
(``--nproc 1``, no torchrun) trains as the nightly's training stages do. Each process loads the examples and
trains on its share of every batch (gloo on CPU, nccl with one GPU per process); rank 0 alone writes the
checkpoints, logs the MLflow run and registers the `challenger` versions, tagged with the nightly's reuse key
so a nightly run of the same date, settings and code reuses them instead of retraining. Settings come from
the environment (``NIGHTREC_*``), as for every other entry point.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch.multiprocessing as mp

from nightrec.settings import Settings
from nightrec.training import process_group, reuse, stages
from nightrec.training.process_group import World
from schemas.results import ModelTrained

MODELS = ("retrieval", "ranking")
log = logging.getLogger(__name__)


def train(
    settings: Settings,
    ds: date,
    models: tuple[str, ...] = MODELS,
    world: World | None = None,
    tags: dict[str, str] | None = None,
    force: bool = True,
) -> dict[str, ModelTrained]:
    """Train ``models`` (in order: the ranker learns from the two-tower `challenger`) in this process's world.

    Args:
        settings: Locations and training knobs (the same on every process).
        ds: Run date whose examples are trained on.
        models: ``retrieval`` and/or ``ranking``.
        world: This process's place among the training processes; None = this process alone.
        tags: More tags for the training runs (the launching stage's flow run, say).
        force: Train even when a version of tonight's key exists (by hand, the default); the nightly's launcher
            passes False after its own check, so both decide by one rule (:func:`reuse.train_or_reuse`).

    Returns:
        ``{model: the registered version}`` (rank 0's, on every rank).
    """
    world = world or World()
    launched = {"nightrec.launcher": "nightrec.training.distributed", "nightrec.world_size": str(world.size)}
    return {
        model: reuse.train_or_reuse(
            settings, ds, MODEL_NAMES[model], {**launched, **(tags or {})}, force=force, world=world
        )
        for model in models
    }


MODEL_NAMES = {"retrieval": stages.RETRIEVAL, "ranking": stages.RANKING}  # --model: registered name


def run_in_world(
    world: World,
    settings: Settings,
    ds: date,
    models: tuple[str, ...],
    init_method: str,
    tags: dict[str, str] | None = None,
    force: bool = True,
) -> dict:
    """Join the process group of ``world``, train, and leave it (also on failure)."""
    world = process_group.join(world, settings.train.device, init_method)
    try:
        return train(settings, ds, models, world, tags, force)
    finally:
        process_group.leave(world)


def _spawned(
    rank: int, nproc: int, settings: Settings, ds: date, models: tuple[str, ...], store: str, out: str
):
    result = run_in_world(World(rank, nproc, rank, nproc), settings, ds, models, f"file://{store}")
    if rank == 0:
        Path(out).write_text(json.dumps({m: ref.model_dump(mode="json") for m, ref in result.items()}))


def spawn(
    nproc: int, settings: Settings, ds: date, models: tuple[str, ...] = MODELS
) -> dict[str, ModelTrained]:
    """Train in ``nproc`` processes started here (``torch.multiprocessing.spawn``, a file rendezvous).

    Returns:
        Rank 0's result of :func:`train`. A failure in any process ends the others and is raised here.
    """
    with tempfile.TemporaryDirectory(prefix="nightrec-ddp-") as tmp:
        out = os.path.join(tmp, "result.json")
        args = (nproc, settings, ds, models, os.path.join(tmp, "store"), out)
        mp.spawn(_spawned, args=args, nprocs=nproc, join=True)
        return {m: ModelTrained(**ref) for m, ref in json.loads(Path(out).read_text()).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m nightrec.training.distributed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--date", required=True, type=date.fromisoformat, help="run date YYYY-MM-DD (lake partition)"
    )
    ap.add_argument(
        "--model", choices=[*MODELS, "both"], default="both", help="which model(s) to train (default both)"
    )
    ap.add_argument(
        "--nproc", type=int, default=1, help="processes to spawn when not under torchrun (default 1)"
    )
    ap.add_argument(
        "--settings",
        type=Path,
        help="the settings as JSON (what a nightly stage passes, its run parameters applied); "
        "default: from NIGHTREC_* and .env",
    )
    ap.add_argument("--tag", action="append", default=[], help="KEY=VALUE tag of the training runs")
    ap.add_argument(
        "--reuse",
        action="store_true",
        help="reuse the version trained under tonight's key, as the nightly does (default: always train)",
    )
    ap.add_argument("--out", type=Path, help="write rank 0's result here as JSON (else it is printed)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Built at the edge: from the launcher's file, else from NIGHTREC_* and .env.
    settings = Settings.model_validate_json(args.settings.read_text()) if args.settings else Settings()
    models = MODELS if args.model == "both" else (args.model,)
    tags = dict(t.split("=", 1) for t in args.tag)
    force = not args.reuse
    world = process_group.world_from_env()
    if world.distributed:  # torchrun: this is one of its processes
        if args.nproc not in (1, world.size):
            ap.error(f"--nproc {args.nproc} under torchrun, which started {world.size} processes")
        result = run_in_world(world, settings, args.date, models, "env://", tags, force)
    elif args.nproc > 1:
        result = spawn(args.nproc, settings, args.date, models)
    else:
        result = train(settings, args.date, models, tags=tags, force=force)
    if world.is_main:
        body = json.dumps({m: ref.model_dump(mode="json") for m, ref in result.items()}, indent=2)
        if args.out:
            args.out.write_text(body)
        else:
            print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
