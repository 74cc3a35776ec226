"""Validation figures computed after each epoch: the early-stopping signal and the logged curves.

With several processes each computes its share of the validation examples and the shares are summed (or,
for the AUC, gathered), so every process gets the figures one process would get and takes the same
early-stopping decision.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nightrec.models.two_tower import TwoTower
from nightrec.training.datasets import RankingTensors, RetrievalTensors, iter_batches

if TYPE_CHECKING:
    from nightrec.training.process_group import World

RECALL_K = 50
EVAL_CHUNK = 8192


def evaluate_retrieval(
    model: TwoTower,
    va: RetrievalTensors,
    cats: torch.Tensor,
    batch_loss: Callable[[RetrievalTensors], torch.Tensor],
    batch: int,
    world: World,
) -> dict:
    """Valid loss (in-batch, in order) and recall@50 of each valid positive among all items.

    Process ``r`` of ``n`` takes the loss batches ``r, r + n, ...`` (the same batches one process forms, so
    the loss is the same) and every ``n``-th row for the recall.
    """
    if len(va) == 0:
        return {"valid_loss": math.nan, f"recall_at_{RECALL_K}": math.nan}
    loss_sum = weight_sum = 0.0
    for idx in list(iter_batches(len(va), batch))[world.rank :: world.size]:
        b = va.take(idx.to(va.weight.device))
        w = float(b.weight.sum())
        loss_sum, weight_sum = loss_sum + float(batch_loss(b)) * w, weight_sum + w
    items = model.item_vectors(torch.arange(len(cats), device=cats.device), cats)
    k = min(RECALL_K, len(cats) - 1)
    hits = 0
    rows = torch.arange(world.rank, len(va), world.size)
    for idx in rows.split(EVAL_CHUNK):
        b = va.take(idx.to(cats.device))
        scores = model.user_vectors(b.user_idx, b.segment_idx, b.history) @ items.T
        scores[:, 0] = -math.inf  # the OOV row is never a recommendation
        top = scores.topk(k, dim=1).indices
        hits += int((top == b.item_idx[:, None]).any(dim=1).sum())
    loss_sum, weight_sum, hits = world.sum([loss_sum, weight_sum, hits])
    return {"valid_loss": loss_sum / max(weight_sum, 1e-12), f"recall_at_{RECALL_K}": hits / len(va)}


def evaluate_binary(model: nn.Module, va: RankingTensors, world: World) -> dict:
    """Valid ``logloss`` and ``auc`` of ``x -> logit``; process ``r`` scores the ``r``-th contiguous block."""
    if len(va) == 0:
        return {"logloss": math.nan, "auc": math.nan}
    lo, hi = len(va) * world.rank // world.size, len(va) * (world.rank + 1) // world.size
    chunks = [model(va.x[i : min(i + EVAL_CHUNK, hi)]).float() for i in range(lo, hi, EVAL_CHUNK)]
    logits = torch.cat(chunks) if chunks else va.label.new_zeros(0)
    logits = world.gather_rows(logits)  # the blocks in rank order: the rows in their order
    logloss = float(F.binary_cross_entropy_with_logits(logits, va.label))
    return {"logloss": logloss, "auc": roc_auc(va.label.cpu().numpy(), logits.cpu().numpy())}


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the rank-sum (Mann-Whitney) formula; ties get their average rank.

    Returns NaN when only one class is present.

    Example:
        >>> roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
        0.75
    """
    y = np.asarray(labels) > 0.5
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, inverse, counts = np.unique(
        np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True
    )
    avg_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each distinct score
    rank_sum = float(avg_rank[inverse][y].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
