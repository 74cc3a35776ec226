"""Warm start: tonight's model begins from an earlier night's weights, id tables grown by tonight's vocabulary."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import mlflow
import pytest
import torch

from nightrec.models.deepfm import DeepFM
from nightrec.models.two_tower import TwoTower
from nightrec.training import loop, reuse, stages, warm
from tests.conftest import make_settings
from tests.model.test_training import FAST, FM, TT, _ranking, _retrieval
from tests.unit.features.conftest import CFG, RUN_DATE, clean_build, lake_copy  # noqa: F401


def test_grown_id_tables_keep_their_old_rows_and_new_rows_start_fresh():
    torch.manual_seed(0)
    old = TwoTower(TT)
    grown = dataclasses.replace(TT, n_items=TT.n_items + 7, n_users=TT.n_users + 3)
    torch.manual_seed(1)
    new = TwoTower(grown)
    fresh = new.item_tower.item_embedding.weight.detach().clone()
    copied = warm.copy_overlap(new, old)
    assert "item_tower.item_embedding.weight" in copied and "user_tower.user_embedding.weight" in copied
    torch.testing.assert_close(
        new.item_tower.item_embedding.weight[: TT.n_items], old.item_tower.item_embedding.weight
    )
    torch.testing.assert_close(new.item_tower.item_embedding.weight[TT.n_items :], fresh[TT.n_items :])
    # Every weight of the same shape is the old one (the towers' layers, not only the tables).
    same = [
        n for n, p in old.state_dict().items() if torch.is_tensor(p) and p.shape == new.state_dict()[n].shape
    ]
    assert set(same) <= set(copied)


def test_only_a_config_that_differs_in_vocabulary_sizes_is_the_same_architecture():
    assert warm.same_architecture(TT, dataclasses.replace(TT, n_items=999, n_users=5, n_tags=3))
    assert not warm.same_architecture(TT, dataclasses.replace(TT, dim=32))
    assert not warm.same_architecture(TT, dataclasses.replace(TT, user_encoder="attention"))
    assert warm.same_architecture(FM, dataclasses.replace(FM, field_dims=tuple(d + 5 for d in FM.field_dims)))
    assert not warm.same_architecture(FM, TT) and not warm.same_architecture(None, TT)


def test_a_warm_start_begins_where_the_last_night_ended():
    one_epoch = FAST.model_copy(update={"retrieval_epochs": 1, "ranking_epochs": 1})
    train, valid = _retrieval(3000, 0), _retrieval(500, 1)
    last_night = loop.train_retrieval(train, valid, TT, FAST).model
    tonight = _retrieval(3000, 2)  # the next night: new examples of the same tastes
    cold = loop.train_retrieval(tonight, valid, TT, one_epoch)
    warm_fit = loop.train_retrieval(tonight, valid, TT, one_epoch, init=last_night)
    assert warm_fit.history[0]["train_loss"] < cold.history[0]["train_loss"]
    assert warm_fit.history[0]["recall_at_50"] >= cold.history[0]["recall_at_50"]

    ranker = loop.train_ranking(_ranking(4000, 0), _ranking(800, 1), FM, FAST).model
    cold_r = loop.train_ranking(_ranking(4000, 2), _ranking(800, 1), FM, one_epoch)
    warm_r = loop.train_ranking(_ranking(4000, 2), _ranking(800, 1), FM, one_epoch, init=ranker)
    assert isinstance(warm_r.model, DeepFM)
    assert warm_r.history[0]["train_loss"] < cold_r.history[0]["train_loss"]


@pytest.mark.slow
@pytest.mark.spark
def test_a_warm_started_stage_trains_on_the_warm_budget_and_logs_it(clean_build, tmp_path):  # noqa: F811
    s = make_settings(tmp_path / "home", lake=lake_copy(clean_build.lake, tmp_path / "lake"))
    s.features = CFG
    s.train = s.train.model_copy(
        update={"device": "cpu", "retrieval_epochs": 1, "ranking_epochs": 1, "max_examples": None}
    )
    s.train.warm_max_examples = 300
    cold = {name: reuse.train_or_reuse(s, RUN_DATE, name, {}) for name in (stages.RETRIEVAL, stages.RANKING)}
    client = mlflow.MlflowClient()  # on the registry the stages connected to
    for name, ref in cold.items():
        # As if trained for the night before: tonight's fit starts from it.
        client.set_model_version_tag(
            name, ref.version, "nightrec.ds", (RUN_DATE - timedelta(days=1)).isoformat()
        )
    for name, ref in cold.items():
        warm_ref = reuse.train_or_reuse(s, RUN_DATE, name, {}, force=True)
        cold_params = client.get_run(ref.run_id).data.params
        params = client.get_run(warm_ref.run_id).data.params
        assert params["warm_from"] == ref.version and cold_params["warm_from"] == "", name
        assert params["max_examples"] == "300" and cold_params["max_examples"] == "None", name
        # The ranker's budget counts each positive with its candidate negatives.
        assert int(params["n_train"]) <= 300 * 1.2 < int(cold_params["n_train"]), name
