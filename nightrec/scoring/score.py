"""Score a chunk of users: two-tower candidates, seen/unavailable masking, DeepFM re-rank, rules, top-K.

The same function produces the published lists (as of the run date) and the lists evaluated offline (as of the
holdout start), so the offline metrics measure exactly what users get.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nightrec.models import ranker_inputs
from nightrec.scoring import ease
from nightrec.scoring.baselines import Baseline
from nightrec.scoring.inputs import ItemTable, SeenIndex, UserTable
from nightrec.scoring.retrieve import ExactTopN, MatmulDtype, RankedTopN
from nightrec.scoring.rules import Rules, popular_order

DEFAULT_RERANK_WEIGHT = 0.5  # for a ranker trained before blend weights were chosen on validation
RANK_SLICE = 32_768  # ranker rows per forward pass


@dataclass(frozen=True)
class ScoringConfig:
    top_k: int
    n_candidates: int
    rerank_weight: float | None = None  # None = the ranker's own ``blend_weight`` (chosen on validation)
    max_per_category: int | None = None
    matmul_dtype: MatmulDtype = "auto"
    index: str = "exact"  # or "ivf": FAISS IndexIVFFlat (nightrec.scoring.ann)
    ivf_lists: int | None = None
    ivf_probe: int = 16
    buffer_mb: int = 1024  # the exact search's score buffer (users x items), bounded by scoring.buffer_mb

    @classmethod
    def from_settings(cls, sc, top_k: int | None = None) -> ScoringConfig:
        """From ``Settings.scoring``; ``top_k`` overrides the list length (offline evaluation needs max(k))."""
        return cls(
            sc.top_k if top_k is None else top_k,
            sc.n_candidates,
            sc.rerank_weight,
            sc.max_per_category,
            sc.matmul_dtype,
            sc.index,
            sc.ivf_lists,
            sc.ivf_probe,
            sc.buffer_mb,
        )


@dataclass
class ChunkResult:
    items: np.ndarray  # int64 [B, K] item positions, -1 where fewer than K were possible
    scores: np.ndarray  # float32 [B, K]
    fallback: np.ndarray  # bool [B]


class Scorer:
    """Holds the item side (vectors, masks, fallback list) for one scoring pass over many user chunks."""

    def __init__(self, retrieval, ranking, items: ItemTable, cfg: ScoringConfig, rules: Rules | None = None):
        self.retrieval, self.ranking, self.items, self.cfg = (
            retrieval.eval(),
            ranking.eval() if ranking else None,
            items,
            cfg,
        )
        self.rules = rules or Rules()
        self.baseline = isinstance(retrieval, Baseline)
        with torch.inference_mode():
            if self.baseline:
                self.item_vecs = retrieval.item_vectors().float()
            else:
                self.item_vecs = retrieval.item_vectors(
                    torch.from_numpy(items.item_idx), torch.from_numpy(items.category_idx)
                ).float()
        ok = items.available.copy()
        if self.rules.blocked is not None:
            ok &= ~self.rules.blocked
        self.boost = None if self.rules.boost is None else torch.from_numpy(self.rules.boost)
        self.allowed = torch.from_numpy(ok)
        subset = getattr(
            retrieval, "subset", None
        )  # a baseline over some items only (EASE on a large catalog)
        searched = ok if subset is None else ok[subset]
        shared = retrieval.shared_scores() if self.baseline else None
        if shared is not None:
            self.index = RankedTopN(shared, searched)  # one order for everyone: exact whatever cfg.index says
        elif cfg.index == "ivf":
            from nightrec.scoring.ann import IvfTopN  # faiss is optional

            self.index = IvfTopN(self.item_vecs, searched, cfg.ivf_lists, cfg.ivf_probe)
        else:
            # A baseline's scores are ranks or EASE weights: bf16 would tie hundreds of them, so fp32 always.
            self.index = ExactTopN(
                self.item_vecs,
                searched,
                "float32" if self.baseline else cfg.matmul_dtype,
                max_buffer_bytes=cfg.buffer_mb << 20,
            )
        if subset is not None:
            self.index = SubsetIndex(self.index, subset, len(items))
        self.popular = popular_order(items, ok)
        self.item_fields = torch.from_numpy(
            np.stack([items.item_idx, items.category_idx, items.price_bucket, items.pop_bucket], axis=1)
        ).long()
        # Category by item index, for the ranker's history affinity; index 0 (OOV) has no category.
        known = items.item_idx > 0
        category_of = np.zeros(int(items.item_idx.max(initial=0)) + 1, dtype=np.int64)
        category_of[items.item_idx[known]] = items.category_idx[known]
        self.category_of = torch.from_numpy(category_of)
        # None = the weight chosen on the validation window when the ranker was trained.
        chosen = self.ranking.blend_weight if self.ranking is not None else None
        self.rerank_weight = cfg.rerank_weight if cfg.rerank_weight is not None else chosen
        if self.rerank_weight is None:
            self.rerank_weight = DEFAULT_RERANK_WEIGHT
        self.n_fields = self.ranking.n_fields if self.ranking is not None else None

    def score(self, users: UserTable, seen: SeenIndex, start: int) -> ChunkResult:
        """Score users ``start .. start+len(users)-1`` of the table the seen index was built for."""
        return self.score_each(users, seen, start, [self.rerank_weight])[0]

    def score_each(
        self, users: UserTable, seen: SeenIndex, start: int, rerank_weights: list[float | None]
    ) -> list[ChunkResult]:
        """:meth:`score` once per re-rank weight (None = the scorer's own, 0 = the retrieval order alone), from
        one candidate search: the offline gate measures the learned pair with and without its ranker."""
        b, k = len(users), self.cfg.top_k
        cold = users.n_events == 0
        weights = [self.rerank_weight if w is None else w for w in rerank_weights]
        # The cold users' fallback lists do not depend on the weight: filled once, copied into each result.
        items_out = np.full((b, k), -1, dtype=np.int64)
        scores_out = np.zeros((b, k), dtype=np.float32)
        rows, cols = seen.rows(start, start + b)
        for segment in np.unique(users.segment_idx[cold]):
            members = cold & (users.segment_idx == segment)
            items_out[members], scores_out[members] = self._fallback(int(segment))
        # "Cold" means no engagement, not nothing seen: a user whose every rating was low has seen items, and
        # the fallback list must leave them out as the model path does.
        for u in np.unique(rows[cold[rows]]) if len(rows) else ():
            lo, hi = np.searchsorted(rows, [u, u + 1])  # CSR rows come sorted
            seen_u = cols[lo:hi]
            if np.isin(items_out[u], seen_u).any():
                items_out[u], scores_out[u] = self._fallback(int(users.segment_idx[u]), seen_u)
        warm = np.flatnonzero(~cold)
        if not len(warm):
            return [ChunkResult(items_out.copy(), scores_out.copy(), cold) for _ in weights]
        results = []
        for it, sc in self._score_warm(users.take(warm), rows, cols, warm, weights):
            items, scores = items_out.copy(), scores_out.copy()
            items[warm], scores[warm] = it, sc
            results.append(ChunkResult(items, scores, cold))
        return results

    def _fallback(self, segment: int, seen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        top = self.rules.segment_popular.get(segment, self.popular)
        if seen is not None:
            # The segment's list, then the global one, each without the seen items (no item twice).
            top = np.concatenate([top, self.popular[~np.isin(self.popular, top)]])
            top = top[~np.isin(top, seen)]
        top = top[: self.cfg.top_k]
        it = np.full(self.cfg.top_k, -1, dtype=np.int64)
        it[: len(top)] = top
        sc = np.zeros(self.cfg.top_k, dtype=np.float32)
        sc[: len(top)] = self.items.popularity[top]
        return it, sc

    @torch.inference_mode()
    def _score_warm(
        self, users: UserTable, rows: np.ndarray, cols: np.ndarray, warm: np.ndarray, weights: list[float]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        if self.baseline:
            u = self.retrieval.user_vectors(users).float()
        else:
            u = self.retrieval.user_vectors(
                torch.from_numpy(users.user_idx),
                torch.from_numpy(users.segment_idx),
                torch.from_numpy(users.history),
            ).float()
        # Seen items of these users: chunk rows -> rows of the warm subset; they never become candidates.
        remap = np.full(int(warm.max()) + 1 if len(warm) else 1, -1)
        remap[warm] = np.arange(len(warm))
        keep = rows <= warm.max()
        r = remap[rows[keep]]
        ok = r >= 0
        cand_scores, cand = self.index.search(u, self.cfg.n_candidates, r[ok], cols[keep][ok])
        cand = cand.clamp(min=0)  # -1 (no item) only where the score is -inf, which drops out below
        return [self._top(cand, cand_scores, self._blend(users, cand, cand_scores, w)) for w in weights]

    def _top(
        self, cand: torch.Tensor, cand_scores: torch.Tensor, final: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top-K of the candidates by their final scores, after boosts and the category cap."""
        n_cand = cand.shape[1]
        if self.boost is not None:
            final = ranker_inputs.zscore(final, cand_scores) + self.boost[cand]
        final = final.masked_fill(~torch.isfinite(cand_scores), float("-inf"))
        if self.cfg.max_per_category:
            final = self._cap_categories(cand, final)
        k = min(self.cfg.top_k, n_cand)
        top_scores, top_pos = torch.topk(final, k, dim=1)
        items = torch.gather(cand, 1, top_pos).numpy()
        items = np.where(np.isfinite(top_scores.numpy()), items, -1)
        out_items = np.full((len(cand), self.cfg.top_k), -1, dtype=np.int64)
        out_scores = np.zeros((len(cand), self.cfg.top_k), dtype=np.float32)
        out_items[:, :k], out_scores[:, :k] = items, np.nan_to_num(top_scores.numpy(), neginf=0.0)
        return out_items, out_scores

    def _blend(
        self, users: UserTable, cand: torch.Tensor, cand_scores: torch.Tensor, w: float
    ) -> torch.Tensor:
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
        rank_logits = self._rank(fields[:, : self.n_fields]).reshape(b, c)
        return ranker_inputs.blend(rank_logits, cand_scores, w)

    def _rank(self, fields: torch.Tensor) -> torch.Tensor:
        # Slices keep the MLP's activations cache-sized (one 800k-row pass spends its time in page faults);
        # bf16 autocast where the CPU multiplies bf16 natively, as for the retrieval product.
        use_bf16 = getattr(self.index, "dtype", None) == torch.bfloat16 and fields.device.type == "cpu"
        out = torch.empty(fields.shape[0])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            for lo in range(0, fields.shape[0], RANK_SLICE):
                out[lo : lo + RANK_SLICE] = self.ranking(fields[lo : lo + RANK_SLICE]).float()
        return out

    def _cap_categories(self, cand: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        # Greedy per-category cap: a candidate ranked beyond the cap within its category drops out. Sorting by
        # category (stable, so score order holds within each) gives each candidate its rank in its category
        # in O(B * C log C), where a one-hot over the categories cost O(B * C * categories) memory.
        cats = torch.from_numpy(self.items.category_idx)[cand]
        order = torch.argsort(final, dim=1, descending=True, stable=True)
        by_cat = torch.argsort(torch.gather(cats, 1, order), dim=1, stable=True)
        grouped = torch.gather(torch.gather(cats, 1, order), 1, by_cat)
        pos = torch.arange(grouped.shape[1]).expand_as(grouped)
        starts = torch.ones_like(grouped, dtype=torch.bool)
        starts[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
        first = torch.cummax(torch.where(starts, pos, 0), dim=1).values
        over_grouped = (pos - first) >= self.cfg.max_per_category
        over_ordered = torch.zeros_like(over_grouped).scatter(1, by_cat, over_grouped)
        over = torch.zeros_like(over_ordered).scatter(1, order, over_ordered)
        return final.masked_fill(over, float("-inf"))


class SubsetIndex:
    """An index over some items of the table (their vectors only), searched with and answering in the whole
    table's item positions."""

    def __init__(self, index, subset: np.ndarray, n_items: int):
        self.index, self.subset = index, torch.from_numpy(np.asarray(subset, dtype=np.int64))
        self.inverse = ease.column_of(subset, n_items)

    def search(
        self, users: torch.Tensor, n: int, seen_rows: np.ndarray, seen_items: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cols = self.inverse[seen_items]
        keep = cols >= 0
        scores, items = self.index.search(users, n, seen_rows[keep], cols[keep])
        return scores, torch.where(items >= 0, self.subset[items.clamp(min=0)], -1)
