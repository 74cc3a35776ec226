"""Warm start: tonight's model begins from an earlier night's weights, id tables grown by tonight's vocabulary."""

from __future__ import annotations

import dataclasses

import torch

from nightrec.models.deepfm import DeepFM
from nightrec.models.two_tower import TwoTower
from nightrec.training import loop, warm
from tests.model.test_training import FAST, FM, TT, _ranking, _retrieval


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
