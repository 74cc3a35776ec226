"""Early stopping: which epoch is best, whether patience is exhausted, and the best epoch's weights.

The state it updates is the epoch loop's ``checkpoint.FitState`` (best score, best epoch, epochs without
improvement, a copy of the best weights), so a resumed training stops where an uninterrupted one would.
"""

from __future__ import annotations

import copy
import math

from torch import nn

from nightrec.training.checkpoint import FitState


def score(row: dict, monitor: tuple[str, ...]) -> tuple[float, ...]:
    """The epoch's figures named by ``monitor``, compared in order (higher is better; ``-name`` negates).

    Without validation figures (empty valid split) the score is the negated training loss.

    Example:
        >>> score({"auc": 0.7, "logloss": 0.5, "train_loss": 0.6}, ("auc", "-logloss"))
        (0.7, -0.5)
    """
    signed = [(-1.0, key[1:]) if key.startswith("-") else (1.0, key) for key in monitor]
    values = tuple(sign * row.get(key, math.nan) for sign, key in signed)
    return values if all(math.isfinite(v) for v in values) else (-row["train_loss"],)


def record(s: FitState, row: dict, monitor: tuple[str, ...], model: nn.Module) -> None:
    """Account for the epoch of ``row``: keep the weights when it is the best so far, else count it stale."""
    value = score(row, monitor)
    if s.best is None or value > s.best:
        s.best, s.best_epoch, s.stale = value, row["epoch"], 0
        s.best_state = copy.deepcopy(model.state_dict())
    else:
        s.stale += 1


def exhausted(s: FitState, patience: int) -> bool:
    """More epochs without improvement than ``patience`` allows: stop before the next epoch."""
    return s.stale > patience
