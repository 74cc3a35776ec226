"""What a trained model carries besides its weights is declared by its class and travels in its state_dict."""

from __future__ import annotations

import io
import pickle

import torch

from nightrec.models.configs import DeepFMConfig, TwoTowerConfig
from nightrec.models.deepfm import DeepFM
from nightrec.models.two_tower import TwoTower

DIGEST = {"item_id": {"size": 20, "max_idx": 19, "hash": "ab12"}}


def _two_tower(**kw) -> TwoTower:
    return TwoTower(
        TwoTowerConfig(n_users=10, n_items=20, n_categories=3, n_segments=2, dim=8, history_len=3, **kw)
    )


def test_stamps_start_at_their_defaults_and_survive_a_state_dict_round_trip():
    ranker = DeepFM(DeepFMConfig(field_dims=(10, 3, 20, 5, 11, 32, 32, 12), embed_dim=4, hidden=(8,)))
    assert ranker.stamps() == {"vocab_digest": None, "blend_weight": None}
    ranker.blend_weight, ranker.vocab_digest = 0.4, DIGEST
    buf = io.BytesIO()
    torch.save(ranker.state_dict(), buf)  # what a checkpoint holds
    fresh = DeepFM(ranker.config)
    fresh.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=False))
    assert fresh.stamps() == {"vocab_digest": DIGEST, "blend_weight": 0.4}


def test_a_best_epoch_restore_keeps_the_stamps_of_the_state_it_restores():
    model = _two_tower()
    model.tag_index = {"drama": 1}
    best = model.state_dict()
    model.tag_index = {"drama": 1, "noir": 2}
    model.load_state_dict(best)
    assert model.tag_index == {"drama": 1}
    assert set(model.stamps()) == {"vocab_digest", "tag_index"}


def test_a_model_pickled_before_a_stamp_or_submodule_existed_loads_with_the_defaults():
    model = _two_tower(item_state=False)
    # What an older pickle holds: none of the attributes added since.
    for name in ("vocab_digest", "tag_index", "state_bias"):
        model.__dict__.pop(name, None)
    model.user_tower.__dict__.pop("sequence", None)
    old = pickle.loads(pickle.dumps(model))
    assert old.vocab_digest is None and old.tag_index is None
    assert old.state_bias is None and old.user_tower.sequence is None
    u = old(torch.tensor([[1, 0, 3, 4, 0]]))
    assert u.shape == (1, 8) and torch.allclose(u.norm(dim=1), torch.ones(1))
