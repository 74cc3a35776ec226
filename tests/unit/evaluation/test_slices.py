"""Held-out quality by slice, against a hand-computed example."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nightrec.evaluation.offline import EvalData
from nightrec.evaluation.slices import slice_report
from nightrec.scoring.inputs import ItemTable, SeenIndex, UserTable


def _data() -> EvalData:
    # Four users: two light (2 events, segment 0), two heavy (50 events, segment 1); items 0..99, item 0 the
    # most popular. Each user has one held-out item.
    n_items = 100
    users = UserTable(
        user_id=np.array(["a", "b", "c", "d"], dtype=object),
        user_idx=np.arange(1, 5),
        segment_idx=np.array([0, 0, 1, 1]),
        history=np.zeros((4, 3), dtype=np.int64),
        n_events=np.array([2, 2, 50, 50]),
    )
    items = ItemTable(
        item_id=np.array([f"i{i}" for i in range(n_items)], dtype=object),
        item_idx=np.arange(1, n_items + 1),
        category_idx=np.zeros(n_items, dtype=np.int64),
        price_bucket=np.zeros(n_items, dtype=np.int64),
        pop_bucket=np.zeros(n_items, dtype=np.int64),
        popularity=np.arange(n_items, 0, -1).astype(np.float64),
        available=np.ones(n_items, dtype=bool),
    )
    seen = SeenIndex(np.zeros(5, dtype=np.int64), np.zeros(0, dtype=np.int64))
    # Held out: a -> item 0 (head), b -> item 5 (torso), c -> item 30 (mid), d -> item 90 (tail).
    return EvalData(users, items, seen, np.arange(4), np.array([0, 5, 30, 90]), np.ones(4, dtype=np.int64))


def test_each_cut_has_the_hand_computed_figures_and_gap():
    data = _data()
    lists = np.full((4, 10), -1)
    lists[0, 0] = 0  # a: its item at rank 1 -> NDCG 1
    lists[1, 1] = 5  # b: at rank 2 -> NDCG 1/log2(3)
    lists[2, :] = np.arange(60, 70)  # c: missed
    lists[3, 0] = 90  # d: at rank 1
    rep = slice_report(lists, data, "learned")
    by = {(s.cut, s.name): s for s in rep.slices}
    light, heavy = by[("activity", "1-4")], by[("activity", "20-99")]
    assert light.n == 2 and light.ndcg == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert heavy.n == 2 and heavy.ndcg == pytest.approx(0.5) and heavy.recall == pytest.approx(0.5)
    assert by[("activity", "100+")].n == 0
    # 95% interval: 1.96 x sd / sqrt(n) over the heavy users' NDCG (1 and 0).
    assert heavy.ndcg_ci == pytest.approx(1.96 * np.std([1.0, 0.0], ddof=1) / math.sqrt(2))
    assert by[("segment", "0")].ndcg == light.ndcg and by[("new_vs_returning", "returning")].n == 2
    head, tail = by[("item_popularity", "head (top 1%)")], by[("item_popularity", "tail (50-100%)")]
    assert (head.n, head.recall, head.ndcg) == (1, 1.0, None)
    assert by[("item_popularity", "mid (10-50%)")].recall == 0.0 and tail.recall == 1.0
    # Slices of fewer than 20 users leave no gap to report.
    assert rep.gaps == {}


def test_gaps_compare_slices_with_enough_users():
    data = _data()
    big = EvalData(
        UserTable(*(np.repeat(getattr(data.users, f), 10, axis=0) for f in
                    ("user_id", "user_idx", "segment_idx", "history", "n_events"))),
        data.items, data.seen, np.arange(40), np.repeat(data.rel_items, 10), np.ones(40, dtype=np.int64),
    )  # fmt: skip
    lists = np.full((40, 10), -1)
    lists[:20, 0] = big.rel_items[:20]  # every light user finds its item at rank 1; heavy users miss
    rep = slice_report(lists, big, "ease")
    assert rep.gaps["activity"] == pytest.approx(1.0) and rep.gaps["segment"] == pytest.approx(1.0)
    assert rep.policy == "ease" and rep.k == 10
