"""Score a chunk of users: two-tower candidates, seen/unavailable masking, DeepFM re-rank, rules, top-K.

The same function produces the published lists (as of the run date) and the lists evaluated offline (as of the
holdout start), so the offline metrics measure exactly what users get.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nightrec.models import ranker_inputs
from nightrec.scoring.inputs import ItemTable, SeenIndex, UserTable

DEFAULT_RERANK_WEIGHT = 0.5  # for a ranker trained before blend weights were chosen on validation


@dataclass(frozen=True)
class ScoringConfig:
    top_k: int
    n_candidates: int
    rerank_weight: float | None = None  # None = the ranker's own ``blend_weight`` (chosen on validation)
    max_per_category: int | None = None


@dataclass
class ChunkResult:
    items: np.ndarray  # int64 [B, K] item positions, -1 where fewer than K were possible
    scores: np.ndarray  # float32 [B, K]
    fallback: np.ndarray  # bool [B]


class Scorer:
    """Holds the item side (vectors, masks, fallback list) for one scoring pass over many user chunks."""

    def __init__(
        self, retrieval, ranking, items: ItemTable, cfg: ScoringConfig, blocked: np.ndarray | None = None
    ):
        self.retrieval, self.ranking, self.items, self.cfg = (
            retrieval.eval(),
            ranking.eval() if ranking else None,
            items,
            cfg,
        )
        with torch.inference_mode():
            self.item_vecs = retrieval.item_vectors(
                torch.from_numpy(items.item_idx), torch.from_numpy(items.category_idx)
            ).float()
        ok = items.available.copy()
        if blocked is not None:
            ok &= ~blocked
        self.allowed = torch.from_numpy(ok)
        self.col_mask = torch.where(self.allowed, 0.0, float("-inf"))
        order = np.lexsort((items.item_id, -items.popularity))
        self.popular = order[ok[order]]
        self.item_fields = torch.from_numpy(
            np.stack([items.item_idx, items.category_idx, items.price_bucket, items.pop_bucket], axis=1)
        ).long()
        # Category by item index, for the ranker's history affinity; index 0 (OOV) has no category.
        known = items.item_idx > 0
        category_of = np.zeros(int(items.item_idx.max(initial=0)) + 1, dtype=np.int64)
        category_of[items.item_idx[known]] = items.category_idx[known]
        self.category_of = torch.from_numpy(category_of)
        # None = the weight chosen on the validation window when the ranker was trained.
        chosen = getattr(self.ranking, "blend_weight", None)
        self.rerank_weight = cfg.rerank_weight if cfg.rerank_weight is not None else chosen
        if self.rerank_weight is None:
            self.rerank_weight = DEFAULT_RERANK_WEIGHT
        config = getattr(self.ranking, "config", None)
        # A ranker from before the derived fields reads only the leading table fields.
        self.n_fields = len(config.field_dims) if config is not None else None

    def score(self, users: UserTable, seen: SeenIndex, start: int) -> ChunkResult:
        """Score users ``start .. start+len(users)-1`` of the table the seen index was built for."""
        b, k = len(users), self.cfg.top_k
        cold = users.n_events == 0
        items_out = np.full((b, k), -1, dtype=np.int64)
        scores_out = np.zeros((b, k), dtype=np.float32)
        rows, cols = seen.rows(start, start + b)
        warm = np.flatnonzero(~cold)
        if len(warm):
            it, sc = self._score_warm(users.take(warm), rows, cols, warm)
            items_out[warm], scores_out[warm] = it, sc
        if cold.any():
            items_out[cold], scores_out[cold] = self._fallback(int(cold.sum()))
        return ChunkResult(items_out, scores_out, cold)

    def _fallback(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        top = self.popular[: self.cfg.top_k]
        it = np.full(self.cfg.top_k, -1, dtype=np.int64)
        it[: len(top)] = top
        sc = np.zeros(self.cfg.top_k, dtype=np.float32)
        sc[: len(top)] = self.items.popularity[top]
        return np.tile(it, (n, 1)), np.tile(sc, (n, 1))

    @torch.inference_mode()
    def _score_warm(self, users: UserTable, rows: np.ndarray, cols: np.ndarray, warm: np.ndarray):
        u = self.retrieval.user_vectors(
            torch.from_numpy(users.user_idx),
            torch.from_numpy(users.segment_idx),
            torch.from_numpy(users.history),
        ).float()
        logits = u @ self.item_vecs.T + self.col_mask
        # Seen items of these users: remap chunk rows to rows of the warm subset, then mask before top-k.
        remap = np.full(int(warm.max()) + 1 if len(warm) else 1, -1)
        remap[warm] = np.arange(len(warm))
        keep = rows <= warm.max()
        r = remap[rows[keep]]
        ok = r >= 0
        logits[torch.from_numpy(r[ok]), torch.from_numpy(cols[keep][ok])] = float("-inf")
        n_cand = min(self.cfg.n_candidates, logits.shape[1])
        cand_scores, cand = torch.topk(logits, n_cand, dim=1)
        final = self._blend(users, cand, cand_scores)
        final = final.masked_fill(~torch.isfinite(cand_scores), float("-inf"))
        if self.cfg.max_per_category:
            final = self._cap_categories(cand, final)
        k = min(self.cfg.top_k, n_cand)
        top_scores, top_pos = torch.topk(final, k, dim=1)
        items = torch.gather(cand, 1, top_pos).numpy()
        items = np.where(np.isfinite(top_scores.numpy()), items, -1)
        out_items = np.full((len(users), self.cfg.top_k), -1, dtype=np.int64)
        out_scores = np.zeros((len(users), self.cfg.top_k), dtype=np.float32)
        out_items[:, :k], out_scores[:, :k] = items, np.nan_to_num(top_scores.numpy(), neginf=0.0)
        return out_items, out_scores

    def _blend(self, users: UserTable, cand: torch.Tensor, cand_scores: torch.Tensor) -> torch.Tensor:
        w = self.rerank_weight
        if self.ranking is None or w == 0.0:
            return cand_scores
        b, c = cand.shape
        # Candidates come sorted by retrieval score, seen and unavailable items already masked out: the
        # position is the rank among the recommendable items, as in training (nightrec.training.ranker_examples).
        rank = torch.arange(1, c + 1).expand(b, c)
        fields = ranker_inputs.ranker_fields(
            torch.from_numpy(users.user_idx),
            torch.from_numpy(users.segment_idx),
            torch.from_numpy(users.history),
            self.item_fields[cand],
            rank,
            self.category_of,
        )
        rank_logits = self.ranking(fields[:, : self.n_fields]).float().reshape(b, c)
        return ranker_inputs.blend(rank_logits, cand_scores, w)

    def _cap_categories(self, cand: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        # Greedy per-category cap: the n-th best candidate of a category beyond the cap drops out.
        cats = torch.from_numpy(self.items.category_idx)[cand]
        order = torch.argsort(final, dim=1, descending=True)
        cats_sorted = torch.gather(cats, 1, order)
        onehot = torch.nn.functional.one_hot(cats_sorted, int(cats.max()) + 1)
        seen_before = (onehot.cumsum(1) * onehot).sum(-1)
        over = torch.zeros_like(final, dtype=torch.bool).scatter(
            1, order, seen_before > self.cfg.max_per_category
        )
        return final.masked_fill(over, float("-inf"))
