"""The scorer on a hand-built model: masking, fallback, re-rank blending and the category cap."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from nightrec.models.stamped import Ranker
from nightrec.scoring import inputs
from nightrec.scoring.score import Scorer, ScoringConfig


class CategoryModel(torch.nn.Module):
    """User vector = one-hot of the user's segment; item vector = one-hot of the category, plus a tiny id tilt."""

    def user_vectors(self, user_idx, segment_idx, history):
        return torch.nn.functional.one_hot(segment_idx, 3).float()

    def item_vectors(self, item_idx, category_idx):
        return torch.nn.functional.one_hot(category_idx, 3).float() + 0.01 * item_idx.float().unsqueeze(1)


class PreferLowIds(Ranker):
    """A ranker that prefers low item indices (the opposite of the retrieval tilt)."""

    def forward(self, x):
        return -x[:, 2].float()


def _items(n=8, available=None):
    return inputs.ItemTable(
        item_id=np.array([f"i{i}" for i in range(n)], dtype=object),
        item_idx=np.arange(1, n + 1),
        category_idx=np.array([1, 1, 1, 1, 2, 2, 2, 2])[:n],
        price_bucket=np.zeros(n, dtype=np.int64),
        pop_bucket=np.zeros(n, dtype=np.int64),
        popularity=np.arange(n, dtype=np.float64),
        available=np.ones(n, dtype=bool) if available is None else available,
    )


def _users(segments, n_events):
    n = len(segments)
    return inputs.UserTable(
        user_id=np.array([f"u{i}" for i in range(n)], dtype=object),
        user_idx=np.arange(1, n + 1),
        segment_idx=np.array(segments),
        history=np.zeros((n, 4), dtype=np.int64),
        n_events=np.array(n_events),
    )


def test_seen_and_unavailable_items_are_never_returned_and_cold_users_get_popular_items():
    avail = np.ones(8, dtype=bool)
    avail[3] = False
    items, users = _items(available=avail), _users([1, 2, 1], [5, 5, 0])
    seen = inputs.build_seen(pd.DataFrame({"user_id": ["u0", "u0"], "item_id": ["i2", "i1"]}), users, items)
    res = Scorer(
        CategoryModel(), None, items, ScoringConfig(top_k=3, n_candidates=8, rerank_weight=0.0)
    ).score(users, seen, 0)
    assert res.items[0].tolist() == [0, 7, 6]  # i1, i2 seen and i3 unavailable: only i0 left in category 1
    assert res.items[1].tolist() == [7, 6, 5]  # category 2, id tilt decides the order
    assert res.fallback.tolist() == [False, False, True]
    assert res.items[2].tolist() == [7, 6, 5]  # most popular available
    assert 3 not in res.items[2]


def test_reranker_changes_the_order_within_candidates():
    items, users = _items(), _users([2], [5])
    seen = inputs.build_seen(pd.DataFrame({"user_id": [], "item_id": []}), users, items)
    cfg = ScoringConfig(top_k=2, n_candidates=4, rerank_weight=1.0)
    res = Scorer(CategoryModel(), PreferLowIds(), items, cfg).score(users, seen, 0)
    assert res.items[0].tolist() == [4, 5]


def test_lists_with_and_without_the_ranker_from_one_search_equal_two_separate_scorers():
    items, users = _items(), _users([2, 1, 1], [5, 5, 0])
    # u2 is cold but has seen popular items: its fallback list skips them in both variants.
    pairs = pd.DataFrame({"user_id": ["u0", "u1", "u2", "u2"], "item_id": ["i7", "i0", "i7", "i6"]})
    seen = inputs.build_seen(pairs, users, items)
    cfg = ScoringConfig(top_k=3, n_candidates=6, rerank_weight=1.0)
    both = Scorer(CategoryModel(), PreferLowIds(), items, cfg).score_each(users, seen, 0, [None, 0.0])
    ranked = Scorer(CategoryModel(), PreferLowIds(), items, cfg).score(users, seen, 0)
    plain = Scorer(CategoryModel(), None, items, cfg).score(users, seen, 0)
    for got, want in zip(both, [ranked, plain], strict=True):
        np.testing.assert_array_equal(got.items, want.items)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.fallback, want.fallback)
    assert not np.array_equal(both[0].items[:2], both[1].items[:2])  # the ranker does reorder the warm users


def test_category_cap_limits_items_per_category():
    items, users = _items(), _users([1], [5])
    seen = inputs.build_seen(pd.DataFrame({"user_id": [], "item_id": []}), users, items)
    cfg = ScoringConfig(top_k=4, n_candidates=8, rerank_weight=0.0, max_per_category=2)
    res = Scorer(CategoryModel(), None, items, cfg).score(users, seen, 0)
    cats = items.category_idx[res.items[0]]
    assert (cats == 1).sum() == 2 and (cats == 2).sum() == 2


def test_category_cap_keeps_the_best_candidates_of_each_category_like_a_greedy_loop():
    rng = np.random.default_rng(3)
    n_items, cap = 500, 3
    items = _items(8)
    items.category_idx = rng.integers(0, 30, n_items)
    scorer = Scorer.__new__(Scorer)
    scorer.items, scorer.cfg = items, ScoringConfig(top_k=10, n_candidates=60, max_per_category=cap)
    cand = torch.from_numpy(np.stack([rng.choice(n_items, 60, replace=False) for _ in range(16)]))
    final = torch.from_numpy(rng.standard_normal((16, 60)).round(1))  # rounded: ties happen
    final[0, :5] = float("-inf")
    capped = scorer._cap_categories(cand, final)
    for row in range(16):
        kept, per_cat = [], {}
        for pos in sorted(range(60), key=lambda p: -float(final[row, p])):  # stable, as the scorer's sort
            c = int(items.category_idx[cand[row, pos]])
            per_cat[c] = per_cat.get(c, 0) + 1
            if per_cat[c] <= cap and np.isfinite(float(final[row, pos])):
                kept.append(pos)
        assert sorted(kept) == sorted(np.flatnonzero(np.isfinite(capped[row].numpy())).tolist())


def test_pad_lists_is_vectorised_padding():
    import pyarrow as pa

    out = inputs.pad_lists(pa.array([[1, 2, 3], [], [4]], pa.list_(pa.int32())), 2)
    assert out.tolist() == [[1, 2], [0, 0], [4, 0]]


def test_a_cold_user_who_has_seen_popular_items_gets_a_fallback_list_without_them():
    # u1 rated i7 and i6 (the two most popular) too low to count as engagement: cold, but they are seen.
    items, users = _items(), _users([1, 1], [0, 0])
    seen = inputs.build_seen(pd.DataFrame({"user_id": ["u1", "u1"], "item_id": ["i7", "i6"]}), users, items)
    res = Scorer(CategoryModel(), None, items, ScoringConfig(top_k=3, n_candidates=8)).score(users, seen, 0)
    assert res.fallback.tolist() == [True, True]
    assert res.items[0].tolist() == [7, 6, 5]
    assert res.items[1].tolist() == [5, 4, 3]  # the next most popular, nothing seen


def test_a_popularity_baseline_scores_through_the_same_filters_and_rules():
    from nightrec.scoring.baselines import PopularityBaseline
    from nightrec.scoring.policies import Policy
    from nightrec.scoring.rules import Rules

    avail = np.ones(8, dtype=bool)
    avail[6] = False
    items, users = _items(available=avail), _users([1, 1], [3, 0])
    engagement = np.array([5.0, 9.0, 1.0, 9.0, 0.0, 2.0, 50.0, 7.0])  # i1 and i3 tie: the smaller id first
    seen = inputs.build_seen(pd.DataFrame({"user_id": ["u0"], "item_id": ["i7"]}), users, items)
    blocked = np.zeros(8, dtype=bool)
    blocked[0] = True
    policy = PopularityBaseline(Policy("popularity", {"window_days": 30}), items, engagement)
    cfg = ScoringConfig(top_k=3, n_candidates=8, max_per_category=2)
    res = Scorer(policy, None, items, cfg, Rules(blocked=blocked)).score(users, seen, 0)
    # i6 unavailable, i7 seen, i0 blocked; i1 and i3 fill category 1's cap of 2, so i2 (category 1) is out.
    assert res.items[0].tolist() == [1, 3, 5]
    assert res.fallback.tolist() == [False, True]


def test_an_ease_baseline_recommends_what_co_occurs_with_the_users_items():
    from nightrec.scoring import ease
    from nightrec.scoring.baselines import EaseBaseline
    from nightrec.scoring.policies import Policy

    items = _items()
    # Everyone who had i0 also had i4; u0 has only i0, so EASE must put i4 first for u0.
    users = _users([1, 1, 1, 1], [1, 2, 2, 2])
    pairs = pd.DataFrame(
        {
            "user_id": ["u0", "u1", "u1", "u2", "u2", "u3", "u3"],
            "item_id": ["i0", "i0", "i4", "i0", "i4", "i1", "i2"],
        }
    )
    engaged = inputs.build_seen(pairs, users, items)
    rows = np.repeat(np.arange(4), np.diff(engaged.indptr))
    weights = ease.fit(rows, engaged.indices, 4, len(items), 0.5)
    policy = EaseBaseline(Policy("ease", {"l2": 0.5}), weights, users.user_id, engaged)
    res = Scorer(policy, None, items, ScoringConfig(top_k=2, n_candidates=8)).score(users, engaged, 0)
    assert res.items[0, 0] == 4
    assert 0 not in res.items[0]  # seen


def test_an_ease_baseline_with_a_recency_prior_lifts_recent_items_for_everyone():
    from nightrec.scoring import ease
    from nightrec.scoring.baselines import EaseBaseline
    from nightrec.scoring.policies import Policy

    items = _items()
    users = _users([1, 1], [1, 1])
    pairs = pd.DataFrame({"user_id": ["u0", "u1", "u1"], "item_id": ["i0", "i0", "i4"]})
    engaged = inputs.build_seen(pairs, users, items)
    rows = np.repeat(np.arange(2), np.diff(engaged.indptr))
    weights = ease.fit(rows, engaged.indices, 2, len(items), 0.5)
    plain = EaseBaseline(Policy("ease", {"l2": 0.5}), weights, users.user_id, engaged)
    prior = np.zeros(len(items))
    prior[6] = 10.0  # i6: nobody's co-occurrence, but heavily engaged lately
    policy = Policy("ease", {"l2": 0.5, "recency_weight": 10.0, "recency_days": 30})
    blended = EaseBaseline(policy, weights, users.user_id, engaged, prior)
    cfg = ScoringConfig(top_k=2, n_candidates=8)
    assert Scorer(plain, None, items, cfg).score(users, engaged, 0).items[0, 0] == 4
    assert Scorer(blended, None, items, cfg).score(users, engaged, 0).items[:, 0].tolist() == [6, 6]
    assert policy.name == "ease_recent"


def test_an_ease_baseline_over_some_items_only_returns_those_in_table_positions():
    from nightrec.scoring import ease
    from nightrec.scoring.baselines import EaseBaseline
    from nightrec.scoring.policies import Policy

    items = _items()
    users = _users([1, 1, 1, 1], [1, 2, 2, 2])
    pairs = pd.DataFrame(
        {
            "user_id": ["u0", "u1", "u1", "u2", "u2", "u3", "u3", "u3"],
            "item_id": ["i0", "i0", "i4", "i0", "i4", "i1", "i2", "i6"],
        }
    )
    engaged = inputs.build_seen(pairs, users, items)
    rows = np.repeat(np.arange(4), np.diff(engaged.indptr))
    subset = ease.top_columns(engaged.indices, len(items), 3)  # i0 and i4 (3 and 2 pairs), then i1
    assert subset.tolist() == [0, 1, 4]
    kept, cols = ease.restrict(engaged.indices, subset, len(items))
    weights = ease.fit(rows[kept], cols, 4, len(subset), 0.5)
    policy = EaseBaseline(
        Policy("ease", {"l2": 0.5, "max_items": 3}), weights, users.user_id, engaged, None, subset
    )
    res = Scorer(policy, None, items, ScoringConfig(top_k=2, n_candidates=8)).score(users, engaged, 0)
    assert res.items[0, 0] == 4  # co-occurs with u0's i0, in the table's positions
    warm = res.items[~res.fallback]
    assert set(warm[warm >= 0].tolist()) <= {0, 1, 4}  # nothing outside the subset
    assert 0 not in res.items[0] and 4 not in res.items[1]  # seen


def test_the_seen_index_holds_each_known_pair_once_in_ascending_order():
    rng = np.random.default_rng(0)
    users, items = _users([0] * 6, [1] * 6), _items()
    # Repeats, users and items the tables do not know, and a user with nothing seen.
    pairs = pd.DataFrame(
        {
            "user_id": [f"u{u}" for u in rng.integers(0, 7, 300)],
            "item_id": [f"i{i}" for i in rng.integers(0, 10, 300)],
        }
    )
    pairs = pairs[pairs["user_id"] != "u2"]
    seen = inputs.build_seen(pairs, users, items)
    want = {
        int(u[1:]): sorted({int(i[1:]) for i in g["item_id"] if int(i[1:]) < 8})
        for u, g in pairs.groupby("user_id")
        if int(u[1:]) < 6
    }
    got = {u: seen.indices[seen.indptr[u] : seen.indptr[u + 1]].tolist() for u in range(6)}
    assert got == {u: want.get(u, []) for u in range(6)} and got[2] == []
    codes = np.repeat(np.arange(6), np.diff(seen.indptr)) * len(items) + seen.indices
    assert (np.diff(codes) > 0).all()  # sorted and unique: the recs audit searches them
