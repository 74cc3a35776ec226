"""The divergence guard: a NaN or infinite training loss stops the training before it registers anything."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from nightrec.errors import NightrecError

if TYPE_CHECKING:
    from nightrec.training.process_group import World


class TrainingDiverged(NightrecError):
    """The training loss became NaN or infinite; nothing should be registered from this run."""

    def __init__(self, model: str, epoch: int, step: int, last_finite_loss: float | None) -> None:
        self.model, self.epoch, self.step, self.last_finite_loss = model, epoch, step, last_finite_loss
        last = f"{last_finite_loss:.6g}" if last_finite_loss is not None else "none (first step)"
        super().__init__(
            f"{model} training diverged at epoch {epoch}, step {step}: loss is not finite; "
            f"last finite loss {last}. Lower the learning rate or check the examples for NaN weights/labels."
        )


def checked_loss(
    loss: torch.Tensor, world: World, *, name: str, epoch: int, step: int, last_finite: float | None
) -> float:
    """The step's loss as a float (its mean over the processes), or :class:`TrainingDiverged`.

    One sync per step, which is also the check. With several processes the check reads the mean, so a NaN
    on any process stops every process at the same step (one stopping alone would leave the others waiting
    in the gradient all-reduce).

    Raises:
        TrainingDiverged: the loss is NaN or infinite.
    """
    value = loss.item() if not world.distributed else world.mean(loss).item()
    if not math.isfinite(value):
        raise TrainingDiverged(name, epoch, step, last_finite)
    return value
