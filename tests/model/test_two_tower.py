"""Two-tower model: shapes per Arch, padding and OOV handling, and the in-batch loss."""

from __future__ import annotations

import pickle

import pytest
import torch

from nightrec.models.configs import TwoTowerConfig
from nightrec.models.two_tower import (
    ItemTower,
    TwoTower,
    UserTower,
    full_softmax_loss,
    in_batch_softmax_loss,
)
from nightrec.training.loop import SparseDenseOptimizer

CFG = TwoTowerConfig(n_users=10, n_items=20, n_categories=4, n_segments=3, dim=8, history_len=5, hidden=(16,))


@pytest.fixture
def model() -> TwoTower:
    torch.manual_seed(0)
    return TwoTower(CFG).eval()


def test_user_tower_gives_unit_vectors_of_dim():
    u = UserTower(CFG)(torch.tensor([1, 2, 3]), torch.tensor([0, 1, 2]), torch.randint(0, 20, (3, 5)))
    assert u.shape == (3, 8)
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3))


def test_item_tower_gives_unit_vectors_of_dim():
    v = ItemTower(CFG)(torch.arange(20), torch.randint(0, 4, (20,)))
    assert v.shape == (20, 8)
    torch.testing.assert_close(v.norm(dim=1), torch.ones(20))


def test_forward_is_user_vectors_on_packed_input(model):
    user, seg, hist = torch.tensor([1, 4]), torch.tensor([2, 0]), torch.tensor([[3, 4, 0, 0, 0], [0] * 5])
    packed = torch.cat([user[:, None], seg[:, None], hist], dim=1)
    torch.testing.assert_close(model(packed), model.user_vectors(user, seg, hist))


def test_history_padding_is_left_out_of_the_mean(model):
    user, seg = torch.tensor([1]), torch.tensor([1])
    short = model.user_vectors(user, seg, torch.tensor([[3, 7]]))
    padded = model.user_vectors(user, seg, torch.tensor([[3, 7, 0, 0, 0]]))
    torch.testing.assert_close(short, padded)
    empty = model.user_vectors(user, seg, torch.zeros(1, 5, dtype=torch.long))
    assert torch.isfinite(empty).all()


def test_ids_newer_than_the_model_are_read_as_oov(model):
    hist = torch.tensor([[3, 25, 0, 0, 0]])  # 25 >= n_items
    newer = model.user_vectors(torch.tensor([99]), torch.tensor([7]), hist)
    oov = model.user_vectors(torch.tensor([0]), torch.tensor([0]), torch.tensor([[3, 0, 0, 0, 0]]))
    torch.testing.assert_close(newer, oov)
    torch.testing.assert_close(
        model.item_vectors(torch.tensor([20, 500, -1]), torch.tensor([9, 1, 1])),
        model.item_vectors(torch.tensor([0, 0, 0]), torch.tensor([0, 1, 1])),
    )


def _vecs(b: int, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return (
        torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1),
        torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1),
    )


def test_in_batch_duplicates_of_the_positive_are_not_negatives():
    u, v = _vecs(4)
    same = torch.full((4,), 5)
    # Every other row holds the same item: all are masked, only the positive is left, the loss is 0.
    assert in_batch_softmax_loss(u, v, same, temperature=0.1).item() == pytest.approx(0.0, abs=1e-6)
    assert in_batch_softmax_loss(u, v, torch.arange(4), temperature=0.1).item() > 0.0


def test_logq_correction_matters_only_when_popularity_differs():
    u, v = _vecs(6)
    items = torch.arange(6)
    plain = in_batch_softmax_loss(u, v, items, 0.1)
    uniform = in_batch_softmax_loss(u, v, items, 0.1, log_q=torch.full((6,), -2.0))
    skewed = in_batch_softmax_loss(
        u, v, items, 0.1, log_q=torch.log(torch.tensor([0.5, 0.3, 0.1, 0.05, 0.03, 0.02]))
    )
    torch.testing.assert_close(plain, uniform)
    assert not torch.isclose(plain, skewed)


def test_example_weights_give_a_weighted_mean():
    u, v = _vecs(4)
    items = torch.arange(4)
    full = in_batch_softmax_loss(u, v, items, 0.1, weight=torch.tensor([1.0, 1.0, 1.0, 1.0]))
    doubled = in_batch_softmax_loss(u, v, items, 0.1, weight=torch.tensor([2.0, 2.0, 2.0, 2.0]))
    torch.testing.assert_close(full, doubled)
    first_only = in_batch_softmax_loss(u, v, items, 0.1, weight=torch.tensor([1.0, 0.0, 0.0, 0.0]))
    logits = u @ v.T / 0.1
    expected = torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0]))
    torch.testing.assert_close(first_only, expected)


@pytest.mark.parametrize("sparse", [False, True])
def test_overfits_one_batch(sparse):
    torch.manual_seed(0)
    cfg = TwoTowerConfig(
        n_users=40, n_items=40, n_categories=4, n_segments=3, dim=16, hidden=(32,), sparse=sparse
    )
    model = TwoTower(cfg)
    user, item = torch.arange(1, 33), torch.randperm(39)[:32] + 1
    seg, cat, hist = user % 3, item % 4, torch.randint(0, 40, (32, 5))
    opt = SparseDenseOptimizer(model, lr=0.02)  # SparseAdam for the sparse tables, Adam for the rest
    assert len(opt.optimizers) == (2 if sparse else 1)
    losses = []
    for _ in range(150):
        loss = in_batch_softmax_loss(
            model.user_vectors(user, seg, hist), model.item_vectors(item, cat), item, 0.1
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def _textbook_loss(u, v, item_idx, temperature, weight, log_q):
    """The B x B form: every row's item a column, same-item columns masked out of other rows' negatives."""
    logits = u @ v.T / temperature - log_q[item_idx].unsqueeze(0)
    dup = item_idx.unsqueeze(0) == item_idx.unsqueeze(1)
    dup.fill_diagonal_(False)
    ce = torch.nn.functional.cross_entropy(
        logits.masked_fill(dup, float("-inf")), torch.arange(len(u)), reduction="none"
    )
    return (ce * weight).sum() / weight.sum()


def test_loss_over_distinct_items_equals_the_textbook_form_with_its_gradients():
    g = torch.Generator().manual_seed(3)
    items = torch.tensor([5, 2, 5, 9, 2, 5, 1, 7])  # 5 three times, 2 twice
    table = torch.randn(10, 8, generator=g)
    weight, log_q = torch.rand(8, generator=g), torch.log(torch.rand(10, generator=g))
    grads = []
    for loss_fn in (in_batch_softmax_loss, _textbook_loss):
        u = torch.randn(8, 8, generator=torch.Generator().manual_seed(4)).requires_grad_()
        emb = table.clone().requires_grad_()
        loss = loss_fn(u, emb[items], items, 0.2, weight, log_q)
        loss.backward()
        grads.append((loss.detach(), u.grad, emb.grad))
    for ours, textbook in zip(*grads, strict=True):
        torch.testing.assert_close(ours, textbook)


# --- the attention user encoder and the full softmax ------------------------------------------------------

ATT = TwoTowerConfig(
    n_users=10,
    n_items=20,
    n_categories=4,
    n_segments=3,
    dim=8,
    history_len=5,
    hidden=(16,),
    user_encoder="attention",
)


def test_attention_tower_reads_padding_and_empty_histories_without_nans():
    torch.manual_seed(0)
    model = TwoTower(ATT).eval()
    user, seg = torch.tensor([1, 2]), torch.tensor([1, 1])
    hist = torch.tensor([[3, 7, 0, 0, 0], [0, 0, 0, 0, 0]])
    u = model.user_vectors(user, seg, hist)
    assert torch.isfinite(u).all()
    torch.testing.assert_close(u.norm(dim=1), torch.ones(2))
    # Padding is masked out of the attention: a shorter tensor of the same items gives the same vector.
    torch.testing.assert_close(model.user_vectors(user[:1], seg[:1], torch.tensor([[3, 7]])), u[:1])
    # Order matters (it does not for the mean): the same items, most recent first, read differently.
    swapped = model.user_vectors(user[:1], seg[:1], torch.tensor([[7, 3, 0, 0, 0]]))
    assert not torch.allclose(swapped, u[:1])


def test_a_mean_tower_pickled_before_the_attention_encoder_still_scores(model):
    hist = torch.tensor([[3, 7, 0, 0, 0]])
    before = model.user_vectors(torch.tensor([1]), torch.tensor([1]), hist)
    del model.user_tower.sequence  # what an older pickle holds
    old = pickle.loads(pickle.dumps(model))
    torch.testing.assert_close(old.user_vectors(torch.tensor([1]), torch.tensor([1]), hist), before)


def test_full_softmax_is_cross_entropy_over_the_catalog_with_a_weighted_mean():
    g = torch.Generator().manual_seed(5)
    u, items = torch.randn(6, 8, generator=g), torch.randn(12, 8, generator=g)
    target, weight = torch.tensor([1, 4, 4, 11, 2, 7]), torch.rand(6, generator=g)
    ce = torch.nn.functional.cross_entropy(u @ items.T / 0.5, target, reduction="none")
    torch.testing.assert_close(
        full_softmax_loss(u, items, target, 0.5, weight), (ce * weight).sum() / weight.sum()
    )
    torch.testing.assert_close(full_softmax_loss(u, items, target, 0.5), ce.mean())
    # Split over two processes: each passes its rows, the whole batch's weight and the process count.
    halves = [
        full_softmax_loss(u[s], items, target[s], 0.5, weight[s], weight.sum(), scale=2)
        for s in (slice(0, 3), slice(3, 6))
    ]
    torch.testing.assert_close(sum(halves) / 2, full_softmax_loss(u, items, target, 0.5, weight))


def test_config_refuses_an_unknown_encoder_or_heads_that_do_not_divide_dim():
    with pytest.raises(ValueError, match="user_encoder"):
        TwoTowerConfig(n_users=2, n_items=2, n_categories=1, n_segments=1, user_encoder="rnn")
    with pytest.raises(ValueError, match="attention_heads must divide dim"):
        TwoTowerConfig(
            n_users=2,
            n_items=2,
            n_categories=1,
            n_segments=1,
            dim=8,
            user_encoder="attention",
            attention_heads=3,
        )
