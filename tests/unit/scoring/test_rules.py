"""Business rules: blocklist, item and category boosts, per-segment cold-start lists."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from nightrec.scoring import inputs, rules
from nightrec.scoring.score import Scorer, ScoringConfig
from nightrec.settings import ScoringSettings
from tests.unit.scoring.test_score import CategoryModel, _items, _users


def _no_seen(users, items):
    return inputs.build_seen(pd.DataFrame({"user_id": [], "item_id": []}), users, items)


def _score(users, items, rule_set, top_k=3):
    cfg = ScoringConfig(top_k=top_k, n_candidates=8, rerank_weight=0.0)
    return Scorer(CategoryModel(), None, items, cfg, rule_set).score(users, _no_seen(users, items), 0)


def test_item_boost_lifts_a_low_scored_item_into_the_list_and_blocklist_removes_one():
    items, users = _items(), _users([1], [5])  # segment 1 prefers category 1: items i0..i3, i3 first
    plain = _score(users, items, None)
    assert items.item_id[plain.items[0]].tolist() == ["i3", "i2", "i1"]
    boost = rules.item_boosts(items, ScoringSettings(item_boosts={"i0": 5.0, "gone": 1.0}), {})
    blocked = items.item_id == "i3"
    res = _score(users, items, rules.Rules(blocked=blocked, boost=boost))
    assert items.item_id[res.items[0]].tolist() == ["i0", "i2", "i1"]


def test_category_boost_outweighs_the_users_taste():
    items, users = _items(), _users([1], [5])
    sc = ScoringSettings(category_boosts={"shoes": 10.0, "unknown": 1.0})
    boost = rules.item_boosts(items, sc, {"books": 1, "shoes": 2})
    assert boost.tolist() == [0.0] * 4 + [10.0] * 4
    res = _score(users, items, rules.Rules(boost=boost))
    assert set(items.category_idx[res.items[0]]) == {2}


def test_cold_users_get_their_segments_popular_items_when_the_segment_has_enough_users():
    items = _items()
    # Segment 1's users (with history) engage with i5; segment 2 has a single user.
    users = _users([1, 1, 1, 2, 1, 2, 0], [3, 3, 3, 3, 0, 0, 0])
    pairs = pa.table(
        {
            "user_id": ["u0", "u1", "u2", "u3", "u0"],
            "item_id": ["i5", "i5", "i5", "i1", "i6"],
            "weight": [1.0, 1.0, 1.0, 1.0, 1.0],
        }
    )
    allowed = np.ones(len(items), dtype=bool)
    popular = rules.segment_popular(pairs, users, items, allowed, k=3, min_users=2)
    assert list(popular) == [1]
    assert items.item_id[popular[1]].tolist() == ["i5", "i6", "i7"]  # topped up by global popularity
    res = _score(users, items, rules.Rules(segment_popular=popular))
    assert res.fallback.tolist() == [False] * 4 + [True] * 3
    assert items.item_id[res.items[4]].tolist() == ["i5", "i6", "i7"]  # segment 1's list
    assert items.item_id[res.items[5]].tolist() == ["i7", "i6", "i5"]  # global popularity (i7 most popular)
    assert items.item_id[res.items[6]].tolist() == ["i7", "i6", "i5"]  # unknown segment


def test_coldstart_lists_are_what_cold_users_of_each_segment_and_unknown_ones_are_served():
    items = _items()
    users = _users([1, 1, 1, 2, 1, 0], [3, 3, 3, 3, 0, 0])
    pairs = pa.table({"user_id": ["u0", "u1", "u2"], "item_id": ["i5"] * 3, "weight": [1.0] * 3})
    allowed = items.item_id != "i6"  # blocked or unavailable items never reach a cold-start list
    popular = rules.segment_popular(pairs, users, items, allowed, k=3, min_users=2)
    table = rules.coldstart_table(items, allowed, popular, {"young": 1, "old": 2, "never-seen": 9}, k=3)
    lists = {s: [] for s in table["segment"].to_pylist()}
    for s, i in zip(table["segment"].to_pylist(), table["item_id"].to_pylist(), strict=True):
        lists[s].append(i)
    assert set(lists) == {"", "young"}  # "old" has too few users with history: its users get the global list
    res = _score(users, items, rules.Rules(blocked=~allowed, segment_popular=popular))
    assert lists["young"] == items.item_id[res.items[4]].tolist()  # a cold user of segment 1
    assert lists[""] == items.item_id[res.items[5]].tolist()  # a cold user of no known segment
    assert table["rank"].to_pylist() == [1, 2, 3, 1, 2, 3]
    assert table["score"].to_pylist()[:3] == items.popularity[res.items[5]].astype(float).tolist()
