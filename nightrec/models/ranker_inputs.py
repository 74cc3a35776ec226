"""The ranker's derived inputs: what a (user, candidate) pair means to this user, as categorical fields.

DeepFM's table fields (``schemas.tables.RANKING_FIELDS``) carry no user taste beyond the raw user id, which a
few dozen examples per user cannot train. Two fields derived from the user's point-in-time history add it:

- ``retrieval_bucket``: the candidate's rank under the two-tower score for this user, on a half-log2 scale.
  A rank rather than the raw cosine, because only the order within one user's candidates matters and ranks
  have the same distribution in training (rank among all items) as in scoring (rank among the candidates).
- ``affinity_bucket``: the share of the user's history in the candidate's category, in tenths.

Training (``nightrec.training.stages``) and scoring (``nightrec.scoring.score``) both build the fields with
:func:`ranker_fields`, so the ranker sees the same inputs in both.
"""

from __future__ import annotations

import torch

RETRIEVAL_BUCKETS = 32  # 0 = no retrieval rank; rank r -> 1 + floor(2 log2 r), capped
AFFINITY_BUCKETS = 12  # 0 = empty history; share s -> 1 + round(10 s)


def retrieval_bucket(rank: torch.Tensor) -> torch.Tensor:
    """1-based retrieval rank -> bucket ``1 + floor(2 * log2(rank))`` (0 where the rank is unknown, < 1).

    Example::

        retrieval_bucket(torch.tensor([1, 2, 3, 4, 200, 0]))  # tensor([ 1,  3,  4,  5, 16,  0])
    """
    r = rank.clamp_min(1).double()
    b = 1 + torch.floor(2.0 * torch.log2(r)).long()
    return torch.where(rank >= 1, b.clamp(max=RETRIEVAL_BUCKETS - 1), torch.zeros_like(b))


def affinity_bucket(history_categories: torch.Tensor, candidate_categories: torch.Tensor) -> torch.Tensor:
    """Share of each user's history in each candidate's category, in buckets (0 = empty history).

    Args:
        history_categories: ``[B, H]`` category of each history item, 0 for padding (and unknown items).
        candidate_categories: ``[B, C]`` category of each candidate.

    Returns:
        ``[B, C]`` int64 buckets in ``[0, AFFINITY_BUCKETS)``.

    Example::

        affinity_bucket(torch.tensor([[1, 1, 2, 0], [0, 0, 0, 0]]), torch.tensor([[1, 3], [1, 2]]))
        # tensor([[8, 1], [0, 0]]): 2/3 of user 0's history is category 1, none is 3; user 1 has none
    """
    valid = history_categories > 0
    n = valid.sum(1, keepdim=True)
    same = (history_categories[:, None, :] == candidate_categories[:, :, None]) & valid[:, None, :]
    share = same.sum(2).double() / n.clamp_min(1)
    b = 1 + torch.round(10.0 * share).long()
    return torch.where(n > 0, b, torch.zeros_like(b))


def ranker_fields(
    user_idx: torch.Tensor,
    segment_idx: torch.Tensor,
    history: torch.Tensor,
    candidates: torch.Tensor,
    retrieval_rank: torch.Tensor,
    category_of: torch.Tensor,
) -> torch.Tensor:
    """The ranker's input rows, ``[B * C, len(RANKER_FIELDS)]`` in ``RANKER_FIELDS`` order.

    Args:
        user_idx: ``[B]`` user indices.
        segment_idx: ``[B]`` segment indices.
        history: ``[B, H]`` 0-padded history item indices as of the user's cutoff.
        candidates: ``[B, C, 4]`` item fields of each candidate: item_idx, category_idx, price_bucket,
            pop_bucket.
        retrieval_rank: ``[B, C]`` 1-based two-tower rank of each candidate (0 = unknown).
        category_of: ``[n]`` category of each item index (0 where unknown); indices beyond it read as 0.

    Returns:
        int64 rows, user-major (row ``b * C + c`` is user ``b``, candidate ``c``).
    """
    b, c = candidates.shape[:2]
    hist = history.long()
    known = (hist > 0) & (hist < category_of.shape[0])
    hist_cats = torch.where(known, category_of[hist.clamp(0, max(category_of.shape[0] - 1, 0))], 0)
    cols = [
        user_idx.long()[:, None].expand(b, c),
        segment_idx.long()[:, None].expand(b, c),
        *candidates.long().unbind(2),
        retrieval_bucket(retrieval_rank.long()),
        affinity_bucket(hist_cats, candidates[:, :, 1].long()),
    ]
    return torch.stack(cols, dim=2).reshape(b * c, len(cols))


_RANK_ROWS = 64  # rows per block: a block's difference stays in cache


def rank_among(scores: torch.Tensor, target_scores: torch.Tensor) -> torch.Tensor:
    """1-based rank of ``target_scores[i]`` among the finite scores of row ``scores[i]`` (ties in its favour).

    A target whose own score is not finite gets rank 0 (unknown). Scores are finite or ``-inf`` (masked).

    Counted a block of rows at a time as ``(scores - target) > 0`` (exact: a difference of floats is 0 only
    when they are equal): over 100K items the one-pass ``(scores > s) & isfinite(scores)`` made two B x N
    boolean temporaries and took 7 s of every 8,192 examples, most of the ranker's candidate derivation at
    the L tier (bench/results/night_scale.md); this takes a tenth of a second.

    Example::

        rank_among(torch.tensor([[0.1, 0.9, 0.5]]), torch.tensor([0.5]))  # tensor([2])
    """
    rank = torch.empty(scores.shape[0], dtype=torch.long, device=scores.device)
    for lo in range(0, scores.shape[0], _RANK_ROWS):
        sl = slice(lo, lo + _RANK_ROWS)
        rank[sl] = (scores[sl] - target_scores[sl, None]).gt_(0).sum(1)
    rank += 1
    return torch.where(torch.isfinite(target_scores), rank, torch.zeros_like(rank))


def zscore(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` standardised per row over the entries where ``ref`` is finite (the real candidates)."""
    finite = torch.isfinite(ref)
    xs = torch.where(finite, x, torch.zeros_like(x))
    n = finite.sum(1, keepdim=True).clamp(min=1)
    mean = xs.sum(1, keepdim=True) / n
    var = (torch.where(finite, x - mean, torch.zeros_like(x)) ** 2).sum(1, keepdim=True) / n
    return (x - mean) / (var.sqrt() + 1e-6)


def blend(rank_logits: torch.Tensor, retrieval_scores: torch.Tensor, weight: float) -> torch.Tensor:
    """The final candidate score: ``w * z(ranker) + (1 - w) * z(retrieval)``, standardised per user."""
    z_retrieval = zscore(retrieval_scores, retrieval_scores)
    return weight * zscore(rank_logits, retrieval_scores) + (1 - weight) * z_retrieval
