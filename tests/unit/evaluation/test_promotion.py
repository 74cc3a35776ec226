"""The promotion gate's decision table (scenario 15 of the reliability plan, decision part)."""

from __future__ import annotations

from nightrec.evaluation.promotion import decide

POP = {"ndcg_at_10": 0.10}


def test_first_champion_must_beat_popularity():
    assert decide({"ndcg_at_10": 0.2}, None, POP, "ndcg_at_10", 0.01).promote
    d = decide({"ndcg_at_10": 0.09}, None, POP, "ndcg_at_10", 0.01)
    assert not d.promote and "popularity" in d.reason


def test_challenger_within_tolerance_is_promoted_and_worse_is_not():
    champ = {"ndcg_at_10": 0.30}
    assert decide({"ndcg_at_10": 0.295}, champ, POP, "ndcg_at_10", 0.01).promote
    d = decide({"ndcg_at_10": 0.25}, champ, POP, "ndcg_at_10", 0.01)
    assert not d.promote and "champion 0.3000" in d.reason


def test_a_challenger_that_loses_to_popularity_never_wins_even_against_a_weak_champion():
    assert not decide({"ndcg_at_10": 0.08}, {"ndcg_at_10": 0.05}, POP, "ndcg_at_10", 0.01).promote
