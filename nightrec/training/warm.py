"""Warm start: tonight's model begins from the weights of the last night's, and needs fewer epochs.

One more day of data moves the optimum a little; training from scratch every night pays the whole descent
again, which at 100M events is most of a night's training budget. Ids cannot drift (the vocabulary only
grows, ``io.vocab_identity``), so yesterday's row ``i`` of an id table is tonight's row ``i``: every weight is
copied where it still fits, rows of new ids keep their fresh initialisation, and the fit runs
``train.warm_epochs`` epochs under the same early stopping.

The source is the newest *evaluated* version of the model trained for an earlier run date: never a serving
twin (those trained on the holdout window that tonight's evaluation measures), never tonight's own (a re-run of
the night warm-starts from the same source, so its reuse key is unchanged). A source whose architecture differs
(another dimension, encoder or field set) or whose vocabulary tonight's does not extend is not used: the model
trains from scratch, and says so.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

# Config fields that follow the vocabulary's size, which may grow from night to night.
_SIZES = {"n_users", "n_items", "n_categories", "n_segments", "n_tags", "field_dims", "sparse"}


def same_architecture(theirs, mine) -> bool:
    """Whether two model configs differ at most in their vocabulary sizes."""
    return theirs is not None and type(theirs) is type(mine) and _shape(theirs) == _shape(mine)


def _shape(config) -> dict:
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in _SIZES}


def copy_overlap(model: nn.Module, source: nn.Module) -> list[str]:
    """Copy ``source``'s parameters and buffers into ``model`` where the names match and the shapes agree, or
    differ only in the first dimension (an id table that grew: its first rows); return the names copied."""
    theirs = source.state_dict()
    copied = []
    for name, mine in model.state_dict().items():
        other = theirs.get(name)
        if not isinstance(mine, torch.Tensor) or not isinstance(other, torch.Tensor):
            continue  # extra state (the vocabulary stamp): tonight's model gets its own
        if other.dim() != mine.dim() or other.dtype != mine.dtype:
            continue
        if other.shape == mine.shape:
            mine.copy_(other)
        elif mine.dim() >= 1 and other.shape[1:] == mine.shape[1:] and other.shape[0] <= mine.shape[0]:
            mine[: other.shape[0]].copy_(other)
        else:
            continue
        copied.append(name)
    return copied
