"""Ranking examples -> the ranker's inputs, with negatives drawn from the night's retrieval candidates.

The scorer asks the ranker one question: which of the two-tower's top candidates will this user engage with?
The lake's negatives (impressions, popularity samples) answer a different one: impressions follow the
user's taste, so "shown, not clicked" teaches the ranker that popularity does not matter, while among
candidates it matters a lot. So the positives get negatives drawn uniformly from their own user's retrieval
candidates, as of the example's day, built here because they need the two-tower trained the same night.

Every row's fields come from :func:`nightrec.models.ranker_inputs.ranker_fields`, the function the scorer
calls too, with the retrieval rank computed as in scoring (seen items and the OOV row do not compete).
"""

from __future__ import annotations

import math

import torch

from nightrec.models import ranker_inputs
from nightrec.training.datasets import RankingTensors
from nightrec.training.item_popularity import DailyPopularity
from schemas.tables import RANKING_FIELDS

_CHUNK = 8192
_POP = RANKING_FIELDS.index("pop_bucket")  # in the table's fields; ``- 2`` in the item part (from item_idx)


def _days_of(ex: RankingTensors) -> torch.Tensor:
    if ex.day is None:
        raise ValueError("point-in-time popularity needs each example's day (load with with_day=True)")
    return ex.day


def _mask_seen(scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Scores with the OOV row and each row's history at -inf (in place), as the scorer masks seen items."""
    scores[:, 0] = -math.inf
    return scores.scatter_(1, history.clamp(0, scores.shape[1] - 1), -math.inf)


@torch.inference_mode()
def with_ranker_fields(
    ex: RankingTensors,
    retrieval,
    item_fields: torch.Tensor,
    *,
    n_candidates: int,
    negatives_per_positive: int,
    generator: torch.Generator,
    popularity: DailyPopularity | None = None,
) -> RankingTensors:
    """The examples in ``RANKER_FIELDS`` order, plus retrieval-candidate negatives for every positive.

    Args:
        ex: Examples loaded with their history (``x`` in ``RANKING_FIELDS`` order).
        retrieval: The two-tower model of the same night; None leaves the retrieval rank unknown (bucket 0)
            and adds no candidate negatives.
        item_fields: ``[n_items, 4]`` item_idx, category_idx, price_bucket, pop_bucket per item index.
        n_candidates: How many top retrieval items the scorer re-ranks (negatives come from these).
        negatives_per_positive: Candidate negatives per positive (0 = none).
        generator: Seeds the draw.
        popularity: Item popularity as of each day: every row's item (its own and a candidate negative's)
            gets the bucket of the example's day instead of the table's (``ex`` then needs its ``day``).

    Returns:
        Rows of ``ex`` (history dropped) followed by the candidate negatives (label 0).
    """
    if ex.history is None:
        raise ValueError("ranking examples were loaded without their history (pass history_len)")
    n_items = item_fields.shape[0]
    category_of = item_fields[:, 1]
    x, hist = ex.x, ex.history
    if popularity is not None:
        x = x.clone()
        x[:, _POP] = popularity.at(_days_of(ex), x[:, 2])
    rank = torch.zeros(len(ex), dtype=torch.long)
    neg_rows, neg_items, neg_rank = [], [], []
    if retrieval is not None and len(ex):
        items = retrieval.item_vectors(torch.arange(n_items), category_of).float()
        c = min(n_candidates, n_items - 1)
        for lo in range(0, len(ex), _CHUNK):
            sl = slice(lo, lo + _CHUNK)
            target = x[sl, 2]
            inside = (target > 0) & (target < n_items)
            scores = retrieval.user_vectors(x[sl, 0], x[sl, 1], hist[sl]).float() @ items.T
            # The example's own item competes even when it is in the history (a repeat engagement).
            own = scores.gather(1, target.clamp(0, n_items - 1)[:, None])[:, 0]
            own = torch.where(inside, own, -math.inf)
            scores = _mask_seen(scores, hist[sl])
            rank[sl] = ranker_inputs.rank_among(scores, own)
            pos = torch.nonzero(ex.label[sl] > 0.5)[:, 0]
            if negatives_per_positive < 1 or not len(pos) or c < 1:
                continue
            top = scores[pos].topk(c, dim=1).indices
            slot = torch.randint(0, c, (len(pos), negatives_per_positive), generator=generator)
            drawn = top.gather(1, slot)
            keep = drawn != target[pos][:, None]  # the positive itself is not a negative
            neg_rows.append((lo + pos)[:, None].expand_as(drawn)[keep])
            neg_items.append(drawn[keep])
            neg_rank.append(slot[keep] + 1)
    fields = [
        ranker_inputs.ranker_fields(x[:, 0], x[:, 1], hist, x[:, None, 2:6], rank[:, None], category_of)
    ]
    labels = [ex.label]
    if neg_rows:
        rows = torch.cat(neg_rows)
        xr = x[rows]
        cand = item_fields[torch.cat(neg_items)][:, None, :]
        if popularity is not None:
            cand = cand.clone()
            cand[:, 0, _POP - 2] = popularity.at(_days_of(ex)[rows], torch.cat(neg_items))
        r = torch.cat(neg_rank)[:, None]
        fields.append(ranker_inputs.ranker_fields(xr[:, 0], xr[:, 1], hist[rows], cand, r, category_of))
        labels.append(torch.zeros(len(rows)))
    return RankingTensors(x=torch.cat(fields), label=torch.cat(labels))


@torch.inference_mode()
def choose_blend_weight(
    ranker,
    retrieval,
    ex: RankingTensors,
    item_fields: torch.Tensor,
    *,
    n_candidates: int,
    weights: tuple[float, ...],
    max_positives: int,
    generator: torch.Generator,
    popularity: DailyPopularity | None = None,
) -> tuple[float, dict[float, float]]:
    """The re-rank blend weight whose lists rank the validation positives best, as the scorer would.

    Each positive's user (as of the example's day) gets their top ``n_candidates`` retrieval items, the
    ranker scores them, and each weight's blend (:func:`nightrec.models.ranker_inputs.blend`) places the
    positive somewhere: the figure is the mean NDCG@10 of that single relevant item (0 when it is not a
    candidate). Ties go to the smaller weight, the retrieval order.

    Args:
        ranker: The trained ranker (eval mode).
        retrieval: The two-tower model it was trained with.
        ex: Validation examples with their history (``x`` in ``RANKING_FIELDS`` order).
        item_fields: ``[n_items, 4]`` item fields per item index.
        n_candidates: Candidates per user, as in scoring.
        weights: The weights to try.
        max_positives: At most this many positives (a seeded sample) bound the cost.
        generator: Seeds the sample.
        popularity: Item popularity as of each example's day for the candidates (as in training).

    Returns:
        The chosen weight and the figure of every weight tried.
    """
    if ex.history is None:
        raise ValueError("validation examples were loaded without their history (pass history_len)")
    pos = torch.nonzero(ex.label > 0.5)[:, 0]
    if retrieval is None or not len(pos):
        return 0.0, {}
    pos = pos[torch.randperm(len(pos), generator=generator)[:max_positives]]
    x, hist = ex.x[pos], ex.history[pos]
    days = _days_of(ex)[pos] if popularity is not None else None
    n_items = item_fields.shape[0]
    items = retrieval.item_vectors(torch.arange(n_items), item_fields[:, 1]).float()
    c = min(n_candidates, n_items - 1)
    n_fields = ranker.n_fields
    gains = {w: 0.0 for w in weights}
    for lo in range(0, len(pos), 512):
        sl = slice(lo, lo + 512)
        scores = retrieval.user_vectors(x[sl, 0], x[sl, 1], hist[sl]).float() @ items.T
        cand_scores, cand = _mask_seen(scores, hist[sl]).topk(c, dim=1)
        b = len(cand)
        rank = torch.arange(1, c + 1).expand(b, c)
        cand_fields = item_fields[cand]
        if popularity is not None:
            cand_fields[..., _POP - 2] = popularity.at(days[sl][:, None].expand_as(cand), cand)
        fields = ranker_inputs.ranker_fields(
            x[sl, 0], x[sl, 1], hist[sl], cand_fields, rank, item_fields[:, 1]
        )
        logits = ranker(fields[:, :n_fields]).float().reshape(b, c)
        is_pos = cand == x[sl, 2][:, None]
        found = is_pos.any(1)
        for w in weights:
            final = ranker_inputs.blend(logits, cand_scores, w)
            own = torch.where(is_pos, final, torch.full_like(final, -math.inf)).max(1).values
            place = (final > own[:, None]).sum(1) + 1
            gain = torch.where(found & (place <= 10), 1.0 / torch.log2(place.double() + 1), 0.0)
            gains[w] += float(gain.sum())
    figures = {w: g / len(pos) for w, g in gains.items()}
    best = max(weights, key=lambda w: (figures[w], -w))
    return best, figures
