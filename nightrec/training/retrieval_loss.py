"""The two-tower's in-batch softmax when one batch is split over several processes.

Each process holds a slice of the batch's users; the negatives are the items of the *whole* batch, gathered
from every process, so a global batch of B trains as it does in one process (B - 1 negatives per row, the
same duplicate counts and logQ correction), not as W batches of B / W. The gradient of every process's
loss reaches the item rows it used on other processes (``World.gather_with_grad``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from nightrec.models.two_tower import PairBias
    from nightrec.training.process_group import World


def sharded_in_batch_softmax_loss(
    world: World,
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    item_idx: torch.Tensor,
    temperature: float,
    weight: torch.Tensor,
    log_q: torch.Tensor | None = None,
    pair_bias: PairBias | None = None,
) -> torch.Tensor:
    """This process's share of ``two_tower.in_batch_softmax_loss`` over the batch gathered from every process.

    Args:
        world: The processes; each passes its own rows (the same number on each).
        user_vecs, item_vecs, item_idx, weight: This process's rows, as for ``in_batch_softmax_loss``.
        temperature, log_q: As for ``in_batch_softmax_loss``.
        pair_bias: As for ``in_batch_softmax_loss``, for this process's rows.

    Returns:
        ``world.size * sum(w * ce over these rows) / sum(w over all rows)``: DDP averages the gradients of
        the processes, so the average of these is the one-process weighted mean over the whole batch.
    """
    all_vecs = world.gather_with_grad(item_vecs)
    all_idx = world.gather_rows(item_idx)
    total_weight = world.gather_rows(weight.float()).sum()
    offset = world.rank * item_idx.shape[0]
    return rows_in_batch_softmax_loss(
        user_vecs,
        all_vecs,
        all_idx,
        offset,
        temperature,
        weight,
        total_weight,
        log_q,
        scale=world.size,
        pair_bias=pair_bias,
    )


def rows_in_batch_softmax_loss(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    item_idx: torch.Tensor,
    offset: int,
    temperature: float,
    weight: torch.Tensor,
    total_weight: torch.Tensor,
    log_q: torch.Tensor | None = None,
    scale: float = 1.0,
    pair_bias: PairBias | None = None,
) -> torch.Tensor:
    """The in-batch softmax terms of the rows ``offset : offset + len(user_vecs)`` of a batch of ``len(item_idx)``.

    The same algebra as ``two_tower.in_batch_softmax_loss`` (logits against the batch's distinct items, each
    column shifted by ``log(count) - log_q``, the row's own item entered once); with ``offset`` 0, all rows
    and ``total_weight = weight.sum()`` it is that loss (``tests/model/test_distributed.py`` checks it).
    """
    b = item_idx.shape[0]
    items, target_all, counts = torch.unique(item_idx, return_inverse=True, return_counts=True)
    first = torch.full_like(items, b).scatter_reduce_(
        0, target_all, torch.arange(b, device=item_idx.device), "amin"
    )
    target = target_all[offset : offset + user_vecs.shape[0]]
    logits = ((user_vecs / temperature) @ item_vecs.index_select(0, first).T).float()
    log_count = counts.float().log()
    if log_q is not None:
        n = log_q.shape[0]
        bias = log_count - log_q[items.masked_fill((items >= n) | (items < 0), 0)]
    else:
        bias = log_count
    logits.add_(bias.unsqueeze(0))
    if pair_bias is not None:
        logits.add_(pair_bias(items).float())
    rows = torch.arange(user_vecs.shape[0], device=item_idx.device)
    logits.index_put_((rows, target), -log_count[target], accumulate=True)
    ce = F.cross_entropy(logits, target, reduction="none")
    return (ce * weight.float()).sum() * scale / total_weight.clamp_min(1e-12)
