"""Item popularity as of each day (for the ranker's examples) is the feature build's popularity, day by day;
item age as of each day counts from the first engagement before it."""

from __future__ import annotations

import math

import pytest
import torch

from nightrec.models.configs import AGE_BUCKETS
from nightrec.training import datasets
from nightrec.training.item_popularity import age_bucket, daily_popularity, day_number, item_state
from tests.unit.features import _lake_compare as lc
from tests.unit.features.conftest import CFG, RUN_DATE

pytestmark = pytest.mark.spark


def test_the_bucket_on_a_day_is_the_feature_builds_bucket_as_of_that_day(clean_build):
    cut = clean_build.cut
    n_items = datasets.vocab_sizes(clean_build.lake, RUN_DATE)["item_id"]
    pop = daily_popularity(
        clean_build.lake, RUN_DATE, cut.valid_start, RUN_DATE, CFG.popularity_days, n_items
    )
    assert pop.buckets.shape == ((RUN_DATE - cut.valid_start).days + 1, n_items)
    for role, day in (("eval", cut.eval_start), ("serve", RUN_DATE)):
        items = lc.read_frame(clean_build.lake, "item_features", RUN_DATE, role)
        items = items[items["item_idx"] > 0]
        idx = torch.tensor(items["item_idx"].to_numpy())
        got = pop.at(torch.full_like(idx, day_number(day)), idx)
        assert got.tolist() == items["pop_bucket"].tolist(), role
        assert got.max() > 0, "a table of zeros would prove nothing"
    # Days differ: the window moves (otherwise the table would add nothing over the eval-role bucket).
    assert not torch.equal(pop.buckets[0], pop.buckets[-1])


def test_item_age_on_a_day_counts_from_the_first_engagement_before_it(clean_build):
    cut = clean_build.cut
    n_items = datasets.vocab_sizes(clean_build.lake, RUN_DATE)["item_id"]
    state = item_state(clean_build.lake, RUN_DATE, cut.valid_start, RUN_DATE, CFG.popularity_days, n_items)
    inter = lc.read_frame(clean_build.lake, "interactions", RUN_DATE)
    engaged = inter[(inter["weight"] > 0) & (inter["item_idx"] > 0)]
    first = engaged.groupby("item_idx")["ts"].min().dt.tz_convert("UTC").dt.date
    for day in (cut.valid_start, cut.eval_start, RUN_DATE):
        pop, age = state.as_of(day)
        assert torch.equal(
            pop, state.popularity.at(torch.full((n_items,), day_number(day)), torch.arange(n_items))
        )
        want = torch.zeros(n_items, dtype=torch.long)
        for item, d in first.items():
            if d < day:  # engaged on an earlier day: known, of age (day - d) days
                want[item] = min(int(math.log2((day - d).days)) + 1, AGE_BUCKETS - 1)
        assert torch.equal(age, want), day
    assert int(state.as_of(RUN_DATE)[1].sum()) > int(state.as_of(cut.valid_start)[1].sum()), "ages must grow"


def test_age_buckets():
    days = torch.tensor([-3, 0, 1, 2, 3, 4, 7, 8, 10**6])
    assert age_bucket(days).tolist() == [0, 0, 1, 2, 2, 3, 3, 4, AGE_BUCKETS - 1]
