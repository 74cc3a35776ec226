"""DeepFM: shapes per Arch, the FM identity, per-field OOV handling, and overfitting one batch."""

from __future__ import annotations

import itertools

import pytest
import torch

from nightrec.models.configs import RANKER_FIELDS, DeepFMConfig
from nightrec.models.deepfm import DeepArch, DeepFM, FeaturesEmbedding, FMArch, OverArch
from nightrec.training.loop import SparseDenseOptimizer

DIMS = (10, 3, 20, 5, 11, 32)
RANKER_DIMS = (*DIMS, 32, 12)  # plus the derived retrieval and affinity buckets


def test_features_embedding_shapes_and_field_offsets():
    emb = FeaturesEmbedding(DIMS, embed_dim=4)
    e, w = emb(torch.tensor([[1, 2, 5, 0, 3, 7], [9, 0, 19, 4, 10, 31]]))
    assert e.shape == (2, 6, 4) and w.shape == (2, 6)
    assert emb.offsets.tolist() == [0, 10, 13, 33, 38, 49]
    # Index 1 of field 0 and index 1 of field 1 are different rows of the shared table.
    e1, _ = emb(torch.tensor([[1, 1, 0, 0, 0, 0]]))
    assert not torch.equal(e1[0, 0], e1[0, 1])


def test_features_embedding_reads_out_of_range_ids_as_each_fields_oov_row():
    emb = FeaturesEmbedding(DIMS, embed_dim=4)
    newer, _ = emb(torch.tensor([[10, 3, 999, -1, 11, 32]]))
    oov, _ = emb(torch.zeros(1, 6, dtype=torch.long))
    torch.testing.assert_close(newer, oov)


def test_fm_arch_equals_the_sum_over_field_pairs():
    emb = torch.randn(3, 6, 4)
    brute = sum((emb[:, i] * emb[:, j]).sum(-1) for i, j in itertools.combinations(range(6), 2))
    torch.testing.assert_close(FMArch()(emb), brute)


def test_deep_and_over_arch_shapes():
    deep = DeepArch(in_features=24, hidden=(32, 16), dropout=0.1)
    h = deep(torch.randn(5, 6, 4))
    assert h.shape == (5, 16) and deep.out_features == 16
    assert OverArch(16)(h).shape == (5,)


def test_deepfm_gives_one_logit_per_row():
    model = DeepFM(DeepFMConfig(field_dims=RANKER_DIMS, embed_dim=4, hidden=(16,)))
    assert model(torch.zeros(7, len(RANKER_FIELDS), dtype=torch.long)).shape == (7,)


def test_config_rejects_a_field_count_other_than_ranking_fields():
    with pytest.raises(ValueError, match="expected 8"):
        DeepFMConfig(field_dims=(10, 3))


def test_config_from_vocab_follows_ranking_field_order():
    cfg = DeepFMConfig.from_vocab({"user_id": 101, "item_id": 51, "category": 6, "segment": 4})
    assert cfg.field_dims == (101, 4, 51, 6, 11, 32, 32, 12)


@pytest.mark.parametrize("sparse", [False, True])
def test_overfits_one_batch(sparse):
    torch.manual_seed(0)
    cfg = DeepFMConfig(field_dims=RANKER_DIMS, embed_dim=8, hidden=(32,), dropout=0.0, sparse=sparse)
    model = DeepFM(cfg)
    x = torch.stack([torch.randint(0, d, (64,)) for d in RANKER_DIMS], dim=1)
    y = torch.randint(0, 2, (64,)).float()
    opt = SparseDenseOptimizer(model, lr=0.03)
    first = last = None
    for _ in range(200):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last < 0.05 < first
