"""Item popularity as of each day (for the ranker's examples) is the feature build's popularity, day by day."""

from __future__ import annotations

import pytest
import torch

from nightrec.training import datasets
from nightrec.training.item_popularity import daily_popularity, day_number
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
