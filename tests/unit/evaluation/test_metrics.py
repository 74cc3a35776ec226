"""List metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nightrec.evaluation import metrics


def test_hits_matrix_marks_relevant_items_per_user_and_ignores_padding():
    lists = np.array([[3, 1, -1], [2, 0, 1]])
    hits = metrics.hits_matrix(lists, np.array([0, 1, 1]), np.array([1, 2, 3]), n_items=4)
    assert hits.tolist() == [[False, True, False], [True, False, False]]


def test_list_metrics_match_hand_computation():
    # user 0: hit at rank 2 of 1 relevant; user 1: hits at ranks 1 and 3 of 2 relevant; user 2: no relevant items.
    hits = np.array([[False, True, False], [True, False, True], [True, True, True]])
    out = metrics.list_metrics(hits, np.array([1, 2, 0]), ks=[3])
    ndcg0 = (1 / math.log2(3)) / 1.0
    ndcg1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert out["n_eval_users"] == 2
    assert out["ndcg_at_3"] == pytest.approx((ndcg0 + ndcg1) / 2)
    assert out["recall_at_3"] == pytest.approx(1.0)
    assert out["hitrate_at_3"] == pytest.approx(1.0)
    assert out["mrr"] == pytest.approx((1 / 2 + 1) / 2)


def test_recall_at_k_caps_the_denominator_at_k():
    hits = np.array([[True, False]])
    out = metrics.list_metrics(hits, np.array([5]), ks=[1, 2])
    assert out["recall_at_1"] == pytest.approx(1.0)
    assert out["recall_at_2"] == pytest.approx(0.5)


def test_coverage_counts_distinct_items():
    assert metrics.coverage(np.array([[0, 1], [1, -1]]), n_items=4) == pytest.approx(0.5)


def test_isin_sorted_equals_numpy_isin_including_values_outside_the_set():
    rng = np.random.default_rng(5)
    pool = np.sort(np.unique(rng.integers(0, 10_000, 3_000)))
    values = np.concatenate([rng.integers(-5, 10_010, 5_000), pool[:3], [pool[-1], pool[-1] + 1]])
    np.testing.assert_array_equal(metrics.isin_sorted(values, pool), np.isin(values, pool))
    assert not metrics.isin_sorted(values, pool[:0]).any()
