"""The epoch loop both models share: train, validate, call back, checkpoint, early-stop.

Each model supplies a step loss (batch indices -> scalar loss) and a validation function; the loop owns the
optimizer, the seeded batch order, the divergence guard, early stopping and checkpoints. With several
processes (a :class:`~nightrec.training.process_group.World` of size > 1) the step runs under
DistributedDataParallel on this process's share of every batch, and only rank 0 writes checkpoints and calls
``on_epoch``; one process runs the loop as it always did.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from nightrec import faults
from nightrec.settings import TrainSettings
from nightrec.training import checkpoint, early_stopping, guards
from nightrec.training.datasets import iter_batches
from nightrec.training.devices import autocast
from nightrec.training.optimizers import SparseDenseOptimizer
from nightrec.training.process_group import World

EpochCallback = Callable[[int, dict], None]
StepLoss = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TrainResult:
    """A trained model (best epoch's weights, on CPU, in eval mode) and how it got there."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)  # one row per epoch
    best_epoch: int = 0
    metrics: dict = field(default_factory=dict)  # the best epoch's row, plus best_epoch and epochs_run


def fit(
    model: nn.Module,
    *,
    name: str,
    n_train: int,
    step_loss: StepLoss,
    evaluate: Callable[[], dict],
    monitor: tuple[str, ...],
    epochs: int,
    batch_size: int,
    lr: float,
    settings: TrainSettings,
    device: torch.device,
    on_epoch: EpochCallback | None,
    checkpoint_path: Path | None = None,
    world: World = World(),
) -> TrainResult:
    """Train ``model`` for up to ``epochs`` epochs and return it with its best epoch's weights.

    ``monitor`` names validation figures compared in order (higher is better; a ``-`` prefix negates), so a
    tie in the first (recall saturates on small catalogs) is broken by the next (the loss).
    With ``checkpoint_path`` the full state (weights, optimizer, epoch, best so far, RNG) is written there
    after every epoch, and a run that finds one resumes after its epoch; seeded on CPU, the result equals an
    uninterrupted run's. ``batch_size`` is the global batch: with ``world`` of n processes each takes
    ``batch_size // n`` rows of it, and ``step_loss`` sees those.

    Raises:
        ValueError: nothing to train (no examples or no epochs).
        TrainingDiverged: a training loss was NaN/inf.
    """
    if n_train == 0 or epochs < 1:
        raise ValueError(f"{name}: nothing to train ({n_train} examples, {epochs} epochs)")
    world.check_same(f"{name}: the number of training examples", n_train)
    opt = SparseDenseOptimizer(model, lr)
    gen = torch.Generator().manual_seed(settings.seed)
    # A checkpoint of n processes resumes only with n processes: the batches they drew differ.
    ckpt_name = name if not world.distributed else f"{name} ({world.size} processes)"
    s = checkpoint.FitState()
    if checkpoint_path is not None and not world.distributed:
        s = checkpoint.resume_fit(checkpoint_path, ckpt_name, n_train, model, opt, gen, device) or s
    elif checkpoint_path is not None:
        # Rank 0 reads the checkpoint it wrote and hands it to every rank: the others may run on machines
        # that do not see its disk, and all must resume from the same epoch or their collectives never meet.
        state = world.broadcast(checkpoint.load(checkpoint_path) if world.is_main else None)
        s = checkpoint.restore_fit(state, checkpoint_path, ckpt_name, n_train, model, opt, gen, device) or s
    step = world.wrap(model, step_loss)  # after the resume: DDP starts from the weights it restored
    deadline = time.perf_counter() + settings.max_minutes * 60 if settings.max_minutes else math.inf
    out_of_time = False
    for epoch in range(s.epoch + 1, epochs + 1):
        if early_stopping.exhausted(s, settings.patience) or out_of_time:
            break  # the checkpoint was written by the epoch that exhausted the patience (or the time)
        model.train()
        start = time.perf_counter()
        if world.distributed:
            batches = world.batches(n_train, batch_size, gen)
        else:
            batches = iter_batches(n_train, batch_size, gen)
        train_loss, out_of_time = _train_epoch(
            step, opt, batches, s, world, name=name, epoch=epoch, device=device, deadline=deadline
        )
        seconds = time.perf_counter() - start
        model.eval()
        with torch.no_grad(), autocast(device):
            valid = evaluate()
        row = {"epoch": epoch, "train_loss": train_loss, **valid}
        row |= {"epoch_seconds": seconds, "samples_per_s": n_train / seconds}
        s.history.append(row)
        s.epoch = epoch
        if on_epoch is not None and world.is_main:
            on_epoch(epoch, dict(row))
        early_stopping.record(s, row, monitor, model)
        if world.is_main:
            _progress(name, row, epochs, monitor[0].lstrip("-"), s.best_epoch)
        if checkpoint_path is not None and world.is_main:
            checkpoint.save_fit(checkpoint_path, ckpt_name, n_train, s, model, opt, gen, device)
            faults.fault("train.after_epoch", count=epoch)
    del step  # the DDP wrapper holds the process group's buckets; the model is all that is returned
    model.load_state_dict(s.best_state)
    model.to("cpu").eval()
    metrics = {k: v for k, v in s.history[s.best_epoch - 1].items() if k != "epoch"}
    metrics |= {
        "best_epoch": s.best_epoch,
        "epochs_run": len(s.history),
        "stopped_by_budget": float(out_of_time),
    }
    if out_of_time and world.is_main:
        PROGRESS.info("%s: stopped by the training budget (train.max_minutes=%s)", name, settings.max_minutes)
    return TrainResult(model=model, history=s.history, best_epoch=s.best_epoch, metrics=metrics)


def _train_epoch(
    step: StepLoss,
    opt: SparseDenseOptimizer,
    batches: Iterator[torch.Tensor],
    s: checkpoint.FitState,
    world: World,
    *,
    name: str,
    epoch: int,
    device: torch.device,
    deadline: float = math.inf,
) -> tuple[float, bool]:
    """One pass over the batches, or its part before ``deadline`` (``time.perf_counter()``); the mean step
    loss (over the processes too) and whether the deadline cut it short.

    Several processes agree on the step to stop at (a sum every ``_DEADLINE_EVERY`` steps), or the ones that
    went on would wait forever in their next all-reduce.
    """
    total, n_steps = 0.0, 0
    for n, idx in enumerate(batches, start=1):
        with autocast(device):
            loss = step(idx.to(device))
        value = guards.checked_loss(loss, world, name=name, epoch=epoch, step=n, last_finite=s.last_finite)
        s.last_finite, total, n_steps = value, total + value, n
        opt.zero_grad()
        loss.backward()
        opt.step()
        if deadline < math.inf and (not world.distributed or n % _DEADLINE_EVERY == 0):
            late = time.perf_counter() > deadline
            if world.distributed:
                late = world.sum([int(late)])[0] > 0
            if late:
                return total / n_steps, True
    return (total / n_steps if n_steps else math.nan), False


_DEADLINE_EVERY = 16  # steps between the processes' agreement on the training budget's deadline


# The training progress people watch: the CLI prints this logger's lines under the stage's own line, and a
# deployment's worker sends them to the Prefect run's log (PREFECT_LOGGING_EXTRA_LOGGERS=nightrec).
PROGRESS = logging.getLogger("nightrec.progress")


def _progress(name: str, row: dict, epochs: int, watched: str, best_epoch: int) -> None:
    figure = row.get(watched)
    PROGRESS.info(
        "%s epoch %d/%d: train loss %.4f%s, %.0f examples/s%s",
        name,
        row["epoch"],
        epochs,
        row["train_loss"],
        f", {watched} {figure:.4f}" if isinstance(figure, float) and math.isfinite(figure) else "",
        row["samples_per_s"],
        " (best so far)"
        if best_epoch == row["epoch"] and isinstance(figure, float) and math.isfinite(figure)
        else "",
    )
