"""The promotion gate's decision table (scenario 15 of the reliability plan, decision part) and its statistics."""

from __future__ import annotations

import numpy as np
import pytest

from nightrec.evaluation.paired import paired_bootstrap
from nightrec.evaluation.promotion import decide
from nightrec.scoring.policies import Policy
from nightrec.settings import PromotionSettings

CFG = PromotionSettings(min_eval_users=50, bootstrap_samples=1000, tolerance=0.01)
POP = Policy("popularity", {"window_days": 30})
POP7 = Policy("popularity", {"window_days": 7})
EASE = Policy("ease", {"l2": 500.0})
NEW = Policy.learned(2, 2)
OLD = Policy.learned(1, 1)


def _users(mean: float, n: int = 400, seed: int = 0, noise: float = 0.2) -> np.ndarray:
    """Per-user NDCG around ``mean``: the same users' noise for one seed, as paired lists share their users."""
    return np.clip(mean + noise * np.random.default_rng(seed).standard_normal(n), 0.0, 1.0)


def test_first_night_the_learned_pair_goes_live_only_when_it_beats_every_baseline():
    base = _users(0.20)
    per_user = {"challenger": base + 0.05, "popularity_30d": base, "ease": base - 0.02}
    cands = {"challenger": NEW, "popularity_30d": POP, "ease": EASE}
    d = decide(per_user, cands, None, CFG)
    assert d.live == "challenger" and d.promote and "first champion" in d.reason
    assert d.comparisons["challenger"].a_wins

    per_user["challenger"] = base - 0.03  # loses to popularity: the strongest baseline goes live instead
    d = decide(per_user, cands, None, CFG)
    assert d.live == "popularity_30d" and d.promote
    assert "strongest baseline popularity_30d" in d.reason


def test_a_learned_pair_within_noise_of_the_best_baseline_does_not_go_live_on_a_first_night():
    base = _users(0.20)
    noise = 0.002 * np.random.default_rng(5).standard_normal(len(base))
    per_user = {"challenger": base + noise, "popularity_30d": base}
    d = decide(per_user, {"challenger": NEW, "popularity_30d": POP}, None, CFG)
    assert d.live == "popularity_30d"
    assert d.comparisons["challenger"].low <= 0.0 <= d.comparisons["challenger"].high


def test_a_baseline_champion_is_replaced_only_by_a_significant_win():
    base = _users(0.30)
    cands = {"challenger": NEW, "popularity_30d": POP, "popularity_7d": POP7}
    jitter = 0.05 * np.random.default_rng(9).standard_normal(len(base))  # per-user differences vary
    small = {"challenger": base + 0.001 + jitter, "popularity_30d": base, "popularity_7d": base - 0.05}
    d = decide(small, cands, "popularity_30d", CFG)
    assert d.live == "popularity_30d" and not d.promote and "no candidate beats it at 95%" in d.reason

    big = small | {"challenger": base + 0.04 + jitter}
    d = decide(big, cands, "popularity_30d", CFG)
    assert d.live == "challenger" and d.promote and "beats popularity_30d" in d.reason


def test_a_baseline_goes_live_when_it_beats_the_learned_champion():
    base = _users(0.25)
    per_user = {"challenger": base - 0.04, "champion": base - 0.05, "popularity_30d": base}
    cands = {"challenger": NEW, "champion": OLD, "popularity_30d": POP}
    d = decide(per_user, cands, "champion", CFG)
    assert d.live == "popularity_30d" and d.promote


def test_a_retrained_learned_pair_refreshes_the_learned_champion_unless_it_is_worse():
    base = _users(0.30)
    cands = {"challenger": NEW, "champion": OLD, "popularity_30d": POP}
    even = {"challenger": base - 0.004, "champion": base, "popularity_30d": base - 0.1}
    d = decide(even, cands, "champion", CFG)
    assert d.live == "challenger" and d.promote and "refreshed" in d.reason

    worse = even | {"challenger": base - 0.05}
    d = decide(worse, cands, "champion", CFG)
    assert d.live == "champion" and not d.promote and "kept champion" in d.reason


def test_too_few_evaluation_users_keep_the_live_policy_and_say_so():
    base = _users(0.3, n=20)
    per_user = {"challenger": base + 0.2, "popularity_30d": base}
    cands = {"challenger": NEW, "popularity_30d": POP}
    d = decide(per_user, cands, "popularity_30d", CFG)
    assert d.live == "popularity_30d" and not d.promote
    assert "only 20 evaluation users" in d.reason and "min_eval_users=50" in d.reason
    first = decide(per_user, cands, None, CFG)
    assert first.live == "popularity_30d" and first.promote  # something always goes live


def test_paired_bootstrap_interval_covers_the_true_difference_and_pairs_the_users():
    rng = np.random.default_rng(1)
    users = rng.uniform(0, 1, 2000)  # large between-user spread, small paired difference
    a = users + 0.01 + 0.01 * rng.standard_normal(2000)
    c = paired_bootstrap(a, users, 0.95, 2000, seed=3)
    assert c.low < 0.01 < c.high and c.a_wins  # unpaired, the between-user spread would swamp +0.01
    assert c.n == 2000 and c.diff == pytest.approx((a - users).mean())
    assert paired_bootstrap(a, users, 0.95, 2000, seed=3) == c  # seeded: the same night, the same decision
    wide = paired_bootstrap(a, users, 0.99, 2000, seed=3)
    assert wide.low < c.low and wide.high > c.high
    with pytest.raises(ValueError, match="align"):
        paired_bootstrap(a, users[:10])


def test_another_window_of_the_live_baseline_has_to_win_it_is_not_a_refresh():
    base = _users(0.30)
    jitter = 0.05 * np.random.default_rng(2).standard_normal(len(base))
    per_user = {"popularity_30d": base, "popularity_7d": base - 0.002 + jitter}
    d = decide(per_user, {"popularity_30d": POP, "popularity_7d": POP7}, "popularity_30d", CFG)
    assert d.live == "popularity_30d" and not d.promote
