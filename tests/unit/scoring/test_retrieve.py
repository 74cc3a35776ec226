"""Exact top-N search against a brute-force reference: two-level top-k, bf16 + rescoring, sub-blocks, masks,
sparse user rows, and the shared-order search of user-independent scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nightrec.scoring import ease, inputs
from nightrec.scoring.retrieve import ExactTopN, RankedTopN, row_slice


def _case(n_items, n_users, d=16, seen=5, seed=0, avail=0.9):
    rng = np.random.default_rng(seed)
    items = torch.from_numpy(rng.standard_normal((n_items, d), dtype=np.float32))
    users = torch.from_numpy(rng.standard_normal((n_users, d), dtype=np.float32))
    allowed = rng.random(n_items) < avail
    rows = np.repeat(np.arange(n_users), seen)
    cols = rng.integers(0, n_items, size=n_users * seen)
    return items, users, allowed, rows, cols


def _brute(items, users, allowed, rows, cols, n):
    logits = users @ items.T
    logits[:, ~torch.from_numpy(allowed)] = float("-inf")
    logits[torch.from_numpy(rows), torch.from_numpy(cols)] = float("-inf")
    return torch.topk(logits, min(n, int(allowed.sum())), dim=1)


@pytest.mark.parametrize("n_items,n", [(20_000, 50), (300, 40), (5_000, 7)])
@pytest.mark.parametrize("buffer_bytes", [1 << 30, 20_000])
def test_fp32_search_equals_brute_force(n_items, n, buffer_bytes):
    items, users, allowed, rows, cols = _case(n_items, 64)
    ref = _brute(items, users, allowed, rows, cols, n)
    index = ExactTopN(items, allowed, "float32", max_buffer_bytes=buffer_bytes)
    assert buffer_bytes > 1 << 20 or index.rows_per_block < 64  # the small buffer does split the users
    scores, found = index.search(users, n, rows, cols)
    torch.testing.assert_close(scores, ref.values)
    # Same scores, and each returned item really has that score (ties may swap equal-scored items).
    got = (users.unsqueeze(1) @ items[found.clamp(min=0)].transpose(1, 2)).squeeze(1)
    torch.testing.assert_close(got, scores)
    assert allowed[found.numpy()].all()
    seen = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert not any((r, int(c)) in seen for r in range(len(users)) for c in found[r])


@pytest.mark.parametrize("kernel", [True, False], ids=["compiled", "torch"])
def test_bf16_candidates_are_rescored_in_fp32_and_recall_is_near_exact(kernel):
    items, users, allowed, rows, cols = _case(30_000, 128, d=32)
    ref = _brute(items, users, allowed, rows, cols, 100)
    index = ExactTopN(items, allowed, "bfloat16", kernel=kernel)
    assert index.fused is kernel
    scores, found = index.search(users, 100, rows, cols)
    exact = (users.unsqueeze(1) @ items[found].transpose(1, 2)).squeeze(1)
    torch.testing.assert_close(scores, exact)  # the scores handed on are fp32 ones, sorted
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    recall = np.mean(
        [len(set(a) & set(b)) / 100 for a, b in zip(found.tolist(), ref.indices.tolist(), strict=True)]
    )
    assert recall > 0.99


@pytest.mark.parametrize(
    "n_items,n,sign,buffer_bytes",
    [
        (50, 40, 1, 1 << 30),  # fewer blocks than candidates: every item is one
        (5_000, 7, 1, 1 << 30),
        (9_000, 100, -1, 1 << 30),  # every score negative: block maxima from the int16 min
        (20_000, 30, 1, 300_000),  # users split into sub-blocks of a small buffer
    ],
)
def test_compiled_bf16_selection_finds_the_fp32_top_n(n_items, n, sign, buffer_bytes):
    items, users, allowed, rows, cols = _case(n_items, 48, d=16, seen=8)
    users = sign * users.abs()
    items = items.abs()
    index = ExactTopN(items, allowed, "bfloat16", max_buffer_bytes=buffer_bytes, kernel=True)
    ref = _brute(items, users, allowed, rows, cols, n)
    scores, found = index.search(users, n, rows, cols)
    assert found.shape == ref.indices.shape
    short = found < 0  # users with fewer than n unseen allowed items: padded exactly where the reference is
    assert torch.equal(short, torch.isinf(ref.values)) and torch.isinf(scores[short]).all()
    assert allowed[found[~short].numpy()].all()
    seen = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert not any((r, int(c)) in seen for r in range(len(users)) for c in found[r])
    # The scores handed on are the returned items' fp32 scores, sorted
    got = (users.unsqueeze(1) @ items[found.clamp(min=0)].transpose(1, 2)).squeeze(1)
    torch.testing.assert_close(scores[~short], got[~short], rtol=1e-5, atol=1e-5)
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    hit = np.mean(
        [len(set(a) & set(b)) / n for a, b in zip(found.tolist(), ref.indices.tolist(), strict=True)]
    )
    assert hit > 0.99


def test_compiled_selection_pads_when_fewer_unseen_items_than_n():
    items, users, allowed, rows, cols = _case(40, 3, seen=0, avail=1.0)
    allowed[:] = False
    allowed[[3, 7, 11]] = True
    scores, found = ExactTopN(items, allowed, "bfloat16", kernel=True).search(
        users, 5, np.array([0]), np.array([7])
    )
    assert found.shape == (3, 3)
    assert set(found[0].tolist()) == {3, 11, -1} and torch.isinf(scores[0, 2])
    assert set(found[1].tolist()) == {3, 7, 11}


def test_fewer_allowed_unseen_items_than_n_pad_with_minus_one():
    items, users, allowed, rows, cols = _case(40, 3, seen=0, avail=1.0)
    allowed[:] = False
    allowed[[3, 7, 11]] = True
    rows, cols = np.array([0]), np.array([7])
    scores, found = ExactTopN(items, allowed, "float32").search(users, 5, rows, cols)
    assert found.shape == (3, 3)  # n is capped at the number of allowed items
    assert set(found[0].tolist()) == {3, 11, -1} and torch.isinf(scores[0, 2])
    assert set(found[1].tolist()) == {3, 7, 11}


@pytest.mark.parametrize("buffer_bytes", [1 << 30, 40_000])
def test_sparse_user_rows_give_the_dense_rows_answer(buffer_bytes):
    rng = np.random.default_rng(3)
    n_items, n_users = 600, 50
    items = torch.from_numpy(rng.standard_normal((n_items, n_items), dtype=np.float32))  # EASE-like: D = N
    dense = torch.from_numpy((rng.random((n_users, n_items)) < 0.02).astype(np.float32))
    dense[7] = 0.0  # a user with no engaged item: an empty sparse row
    allowed = rng.random(n_items) < 0.9
    rows, cols = np.nonzero(dense.numpy())
    index = ExactTopN(items, allowed, "float32", max_buffer_bytes=buffer_bytes)
    assert buffer_bytes > 1 << 20 or index.rows_per_block < n_users  # the sparse rows are sliced into blocks
    want_scores, want_items = index.search(dense, 20, rows, cols)
    sparse = ease.binary_rows(
        np.r_[rows, rows[:9]], np.r_[cols, cols[:9]], n_users, n_items
    )  # repeats count once
    got_scores, got_items = index.search(sparse, 20, rows, cols)
    torch.testing.assert_close(got_scores, want_scores)
    assert torch.equal(got_items, want_items)
    torch.testing.assert_close(row_slice(sparse, 5, 9).to_dense(), dense[5:9])


@pytest.mark.parametrize("n", [1, 25, 400])
def test_shared_order_search_equals_the_exact_search_of_the_same_scores(n):
    rng = np.random.default_rng(4)
    n_items, n_users = 400, 60
    scores = rng.permutation(n_items).astype(np.float32) + 1  # unique, like popularity's rank scores
    allowed = rng.random(n_items) < 0.8
    # Users who saw none, some, or most of the top of the order (the search must reach past all of them),
    # and one who saw every allowed item (an all -inf / -1 row).
    top = np.argsort(-scores)
    pairs = [(0, int(c)) for c in top[:300]] + [(59, int(c)) for c in np.flatnonzero(allowed)]
    others = rng.integers(1, 59, 800), rng.integers(0, n_items, 800)
    pairs += [(int(u), int(c)) for u, c in zip(*others, strict=True)]
    rows, cols = np.array(pairs).T
    users = torch.ones((n_users, 1))
    want_scores, want_items = ExactTopN(torch.from_numpy(scores)[:, None], allowed, "float32").search(
        users, n, rows, cols
    )
    got_scores, got_items = RankedTopN(scores, allowed).search(users, n, rows, cols)
    torch.testing.assert_close(got_scores, want_scores)
    assert torch.equal(got_items, want_items)
    assert (got_items[59] == -1).all() and torch.isinf(got_scores[59]).all()
    assert (got_items[0] >= 0).sum() == min(n, int(allowed.sum()) - int(allowed[top[:300]].sum()))


def test_ivf_index_finds_most_of_the_exact_top_n_and_never_a_seen_or_unavailable_item():
    from nightrec.scoring.ann import IvfTopN

    items, users, allowed, rows, cols = _case(20_000, 64, d=16, seen=30)
    ref = _brute(items, users, allowed, rows, cols, 20)
    index = IvfTopN(items, allowed, n_lists=64, n_probe=16)
    scores, found = index.search(users, 20, rows, cols)
    assert found.shape == (64, 20) and bool((found >= 0).all())
    assert allowed[found.numpy()].all()
    seen = set(zip(rows.tolist(), cols.tolist(), strict=True))
    assert not any((r, int(c)) in seen for r in range(64) for c in found[r])
    got = (users.unsqueeze(1) @ items[found].transpose(1, 2)).squeeze(1)
    torch.testing.assert_close(
        scores, got, atol=1e-4, rtol=1e-4
    )  # FAISS's scores are exact for what it finds
    recall = np.mean(
        [len(set(a) & set(b)) / 20 for a, b in zip(found.tolist(), ref.indices.tolist(), strict=True)]
    )
    full = IvfTopN(items, allowed, n_lists=64, n_probe=64).search(users, 20, rows, cols)[1]
    recall_full = np.mean(
        [len(set(a) & set(b)) / 20 for a, b in zip(full.tolist(), ref.indices.tolist(), strict=True)]
    )
    assert 0.5 < recall <= recall_full and recall_full == 1.0  # probing every list is exact


def test_scorer_with_the_ivf_index_gives_the_exact_lists_when_every_list_is_probed():
    from nightrec.scoring.score import Scorer, ScoringConfig
    from tests.unit.scoring.test_score import CategoryModel, _items, _users

    items, users = _items(), _users([1, 2], [5, 5])
    seen = inputs.build_seen(pd.DataFrame({"user_id": ["u0"], "item_id": ["i3"]}), users, items)
    lists = {}
    for index in ("exact", "ivf"):
        cfg = ScoringConfig(top_k=3, n_candidates=8, rerank_weight=0.0, index=index, ivf_lists=1, ivf_probe=1)
        lists[index] = Scorer(CategoryModel(), None, items, cfg).score(users, seen, 0).items.tolist()
    assert lists["ivf"] == lists["exact"] == [[2, 1, 0], [7, 6, 5]]
