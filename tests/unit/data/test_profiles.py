"""Generator profiles shaped like real logs: what each promises about its data."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from nightrec.data import profiles


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    out = tmp_path_factory.mktemp("ratings")
    summary = profiles.generate("ratings", 500, 300, 120, out, seed=2, events_per_user=30.0)
    return summary, pd.read_parquet(out / "events"), out


def test_ratings_are_explicit_old_and_sparse(ratings):
    summary, ev, _ = ratings
    assert set(ev["event_type"]) == {"rating"} and summary.event_counts == {"rating": len(ev)}
    assert set(ev["value"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0} and ev["value"].nunique() == 5
    assert ev["ts"].min().date() >= dt.date(1997, 12, 24) and ev["ts"].max().date() <= dt.date(1998, 4, 22)
    assert not ev.duplicated(["user_id", "item_id"]).any()  # one rating per title
    days = ev.groupby("user_id")["ts"].agg(lambda t: t.dt.date.nunique())
    assert 0.3 < (days == 1).mean() < 0.9  # many users rate on a single day
    weekly = ev.groupby(ev["ts"].dt.floor("7D"))["user_id"].nunique()
    assert weekly.max() > 2 * weekly.min()  # sparse weeks next to busy ones
    assert ev.groupby("user_id").size().min() >= 20  # MovieLens keeps users with 20 ratings or more


def test_the_same_arguments_give_the_same_bytes(ratings, tmp_path):
    _, ev, _ = ratings
    profiles.generate("ratings", 500, 300, 120, tmp_path, seed=2, events_per_user=30.0)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "events"), ev)


@pytest.mark.parametrize(("profile", "kind"), [("clicks", "click"), ("purchases", "purchase")])
def test_single_event_type_profiles_keep_only_that_type(tmp_path, profile, kind):
    s = profiles.generate(profile, 120, 60, 20, tmp_path, seed=1, fmt="csv")
    ev = pd.read_csv(tmp_path / "events" / "part-00000.csv")
    assert set(ev["event_type"]) == {kind} and len(ev) == s.n_events > 0


def test_an_unknown_profile_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown profile 'movies'.*ratings"):
        profiles.generate("movies", 10, 10, 20, "/nonexistent")
