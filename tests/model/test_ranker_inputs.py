"""The ranker's derived fields: bucket maps, and the same fields in training and in scoring."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from nightrec.models import ranker_inputs
from nightrec.models.configs import RANKER_FIELDS, TwoTowerConfig
from nightrec.models.stamped import Ranker
from nightrec.models.two_tower import TwoTower
from nightrec.scoring import inputs
from nightrec.scoring.score import Scorer, ScoringConfig
from nightrec.training import ranker_examples
from nightrec.training.datasets import RankingTensors


def test_retrieval_bucket_is_half_log2_of_the_rank_and_0_when_unknown():
    got = ranker_inputs.retrieval_bucket(torch.tensor([1, 2, 3, 4, 200, 0, 10**9]))
    assert got.tolist() == [1, 3, 4, 5, 16, 0, ranker_inputs.RETRIEVAL_BUCKETS - 1]


def test_affinity_bucket_is_the_history_share_of_the_candidates_category():
    hist = torch.tensor([[1, 1, 2, 0], [0, 0, 0, 0], [3, 3, 3, 3]])
    cand = torch.tensor([[1, 3], [1, 2], [3, 1]])
    assert ranker_inputs.affinity_bucket(hist, cand).tolist() == [[8, 1], [0, 0], [11, 1]]


def test_rank_among_leaves_out_masked_items_and_unknown_targets():
    scores = torch.tensor([[0.1, 0.9, -torch.inf, 0.5], [0.3, 0.2, 0.1, 0.0]])
    got = ranker_inputs.rank_among(scores, torch.tensor([0.5, -torch.inf]))
    assert got.tolist() == [2, 0]


def test_rank_among_counts_every_block_of_rows_as_a_plain_comparison_would():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 50, (301, 97), generator=g).float()  # many ties, several 64-row blocks
    scores[torch.rand(scores.shape, generator=g) < 0.2] = -torch.inf
    target = scores[:, 3].clone()
    want = [
        0 if not torch.isfinite(t) else int(((row > t) & torch.isfinite(row)).sum()) + 1
        for row, t in zip(scores, target, strict=True)
    ]
    assert ranker_inputs.rank_among(scores, target).tolist() == want
    assert 0 in want and max(want) > 1


class Recorder(Ranker):
    """A ranker that remembers its inputs (and prefers nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(len(x))


def test_training_rows_and_scoring_rows_agree_for_the_same_user_and_item():
    torch.manual_seed(0)
    n_items = 9  # item indices 1..8 (0 is OOV), categories 1..3
    cfg = TwoTowerConfig(n_users=5, n_items=n_items, n_categories=4, n_segments=3, dim=8, history_len=4)
    model = TwoTower(cfg).eval()
    item_idx = np.arange(1, n_items)
    items = inputs.ItemTable(
        item_id=np.array([f"i{i}" for i in item_idx], dtype=object),
        item_idx=item_idx,
        category_idx=item_idx % 3 + 1,
        price_bucket=item_idx % 4,
        pop_bucket=item_idx % 5,
        popularity=item_idx.astype(np.float64),
        available=np.ones(len(item_idx), dtype=bool),
    )
    history = np.array([[3, 6, 0, 0]])
    users = inputs.UserTable(
        np.array(["u"], dtype=object), np.array([2]), np.array([1]), history, np.array([2])
    )
    seen = inputs.build_seen(pd.DataFrame({"user_id": ["u", "u"], "item_id": ["i3", "i6"]}), users, items)
    recorder = Recorder()
    Scorer(model, recorder, items, ScoringConfig(top_k=3, n_candidates=6, rerank_weight=1.0)).score(
        users, seen, 0
    )
    scored = {int(row[2]): row for row in recorder.seen[0]}

    item_fields = torch.zeros((n_items, 4), dtype=torch.long)
    item_fields[item_idx] = torch.from_numpy(
        np.stack([item_idx, items.category_idx, items.price_bucket, items.pop_bucket], axis=1)
    )
    for item in scored:
        base = torch.tensor([[2, 1, *item_fields[item].tolist()]])
        ex = RankingTensors(base, torch.ones(1), torch.from_numpy(history))
        trained = ranker_examples.with_ranker_fields(
            ex,
            model,
            item_fields,
            n_candidates=6,
            negatives_per_positive=0,
            generator=torch.Generator().manual_seed(0),
        )
        assert trained.x.shape == (1, len(RANKER_FIELDS))
        assert trained.x[0].tolist() == scored[item].tolist()


def test_candidate_negatives_come_from_the_users_top_candidates_never_the_positive_or_the_history():
    torch.manual_seed(1)
    n_items = 30
    cfg = TwoTowerConfig(n_users=4, n_items=n_items, n_categories=3, n_segments=2, dim=8, history_len=3)
    model = TwoTower(cfg).eval()
    item_fields = torch.zeros((n_items, 4), dtype=torch.long)
    item_fields[1:, 0] = torch.arange(1, n_items)
    item_fields[1:, 1] = torch.arange(1, n_items) % 2 + 1
    hist = torch.tensor([[5, 6, 0], [7, 0, 0]])
    base = torch.tensor([[1, 1, 9, 2, 0, 0], [2, 1, 11, 2, 0, 0]])
    ex = RankingTensors(base, torch.tensor([1.0, 0.0]), hist)
    out = ranker_examples.with_ranker_fields(
        ex, model, item_fields, n_candidates=5, negatives_per_positive=20,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert len(out) > 2 and out.label[:2].tolist() == [1.0, 0.0] and (out.label[2:] == 0).all()
    negatives = out.x[2:]
    assert (negatives[:, 0] == 1).all()  # only the positive row gets negatives
    with torch.no_grad():
        scores = (
            model.user_vectors(base[:1, 0], base[:1, 1], hist[:1])
            @ model.item_vectors(torch.arange(n_items), item_fields[:, 1]).T
        )
    scores[0, [0, 5, 6]] = -torch.inf
    top5 = scores[0].topk(5).indices.tolist()
    assert set(negatives[:, 2].tolist()) <= set(top5) - {9}
    # Their retrieval bucket is that of their place among the candidates.
    place = torch.tensor([top5.index(i) + 1 for i in negatives[:, 2].tolist()])
    assert negatives[:, 6].tolist() == ranker_inputs.retrieval_bucket(place).tolist()
