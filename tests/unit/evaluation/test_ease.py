"""EASE on matrices small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nightrec.scoring import ease

# Users 0-2 take items 0 and 1 together; user 3 takes items 2 and 3 together.
ROWS = np.array([0, 0, 1, 1, 2, 2, 3, 3])
COLS = np.array([0, 1, 0, 1, 0, 1, 2, 3])


def test_weights_match_the_closed_form_and_have_a_zero_diagonal():
    b = ease.fit(ROWS, COLS, n_users=4, n_items=4, l2=2.0).double().numpy()
    x = np.zeros((4, 4))
    x[ROWS, COLS] = 1.0
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(4))
    expected = np.eye(4) - p / np.diag(p)[None, :]
    np.testing.assert_allclose(b, expected, atol=1e-6)
    assert np.all(np.diag(b) == 0.0)
    # Items 0 and 1 co-occur 3 times: G = [[5, 3], [3, 5]] on that block, so B[0, 1] = 3 / 5.
    assert b[0, 1] == pytest.approx(0.6) and b[0, 2] == pytest.approx(0.0)


def test_duplicate_pairs_count_once():
    once = ease.fit(ROWS, COLS, 4, 4, 2.0)
    twice = ease.fit(np.r_[ROWS, ROWS], np.r_[COLS, COLS], 4, 4, 2.0)
    torch.testing.assert_close(once, twice)


def test_recommends_the_co_occurring_item_and_never_a_seen_or_unavailable_one():
    b = ease.fit(ROWS, COLS, 4, 4, 1.0)
    # User 0 saw item 0, user 1 saw item 2.
    lists = ease.recommend(b, np.array([0, 1]), np.array([0, 2]), n_users=2, k=3)
    assert lists[0, 0] == 1 and lists[1, 0] == 3
    assert 0 not in lists[0] and 2 not in lists[1]
    allowed = np.array([True, False, True, True])
    lists = ease.recommend(b, np.array([0]), np.array([0]), n_users=1, k=3, allowed=allowed)
    assert 1 not in lists[0] and sorted(lists[0].tolist()) == [-1, 2, 3]


def test_chunks_give_the_same_lists_and_users_without_pairs_get_a_list():
    b = ease.fit(ROWS, COLS, 4, 4, 1.0)
    rows, cols = np.array([2, 0, 2]), np.array([2, 0, 3])
    whole = ease.recommend(b, rows, cols, n_users=3, k=2)
    chunked = ease.recommend(b, rows, cols, n_users=3, k=2, chunk=1)
    np.testing.assert_array_equal(whole, chunked)
    assert (whole[1] >= 0).all()  # user 1 saw nothing: zero scores, still a full list
    assert sorted(whole[2].tolist()) == [0, 1]


def test_a_large_catalog_is_restricted_to_its_most_engaged_items():
    cols = np.array([5, 5, 5, 2, 2, 7, 7, 7, 7, 1])
    assert ease.top_columns(cols, 10, None) is None and ease.top_columns(cols, 10, 10) is None
    top = ease.top_columns(cols, 10, 3)
    assert top.tolist() == [2, 5, 7]  # 4, 3 and 2 pairs; item 1 (one pair) is left out
    kept, mapped = ease.restrict(cols, top, 10)
    assert kept.tolist() == [True] * 9 + [False]
    assert top[mapped].tolist() == cols[kept].tolist()


def test_the_sparse_gram_is_the_dense_one_for_many_users():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 5_000, 40_000), rng.integers(0, 300, 40_000)
    x = np.zeros((5_000, 300))
    x[rows, cols] = 1.0
    np.testing.assert_array_equal(ease.gram(rows, cols, 5_000, 300).numpy(), x.T @ x)


def test_one_product_serves_every_bias():
    b = ease.fit(ROWS, COLS, 4, 4, 1.0)
    rows, cols = np.array([0, 1, 2]), np.array([0, 2, 3])
    biases = [None, np.array([0.0, 0.0, 0.0, 5.0]), np.array([0.0, 5.0, 0.0, 0.0])]
    each = ease.recommend_each(b, rows, cols, 3, 2, biases)
    for bias, lists in zip(biases, each, strict=True):
        np.testing.assert_array_equal(lists, ease.recommend(b, rows, cols, 3, 2, bias=bias))
    assert each[1][0, 0] == 3 and each[2][1, 0] == 1  # the prior lifts what it favours
