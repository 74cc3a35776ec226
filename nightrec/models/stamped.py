"""What a trained model carries besides its weights, declared by its class and saved in its state_dict.

The training stage stamps a model with facts the scorer and the checks need later: the digest of the
vocabulary its indices mean (every model), the re-rank blend weight chosen on validation (DeepFM), the tag
vocabulary of its item side (two-tower). They are declared here with their defaults, travel in the state_dict
(``_extra_state``, so a checkpoint or a best-epoch restore keeps them) and in the pickle MLflow stores, and
read as plain attributes: a model pickled before a stamp existed gets its default when it is loaded.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

from torch import nn


class Stamped(nn.Module):
    """An ``nn.Module`` with declared stamps (``STAMPS``: name -> default)."""

    STAMPS: ClassVar[dict[str, Any]] = {"vocab_digest": None}

    vocab_digest: dict[str, dict] | None  # io.vocab_identity.digest of the vocabulary it was trained on

    def __init__(self) -> None:
        super().__init__()
        for name, default in self.STAMPS.items():
            setattr(self, name, copy.deepcopy(default))

    def stamps(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.STAMPS}

    def get_extra_state(self) -> dict[str, Any]:
        return copy.deepcopy(self.stamps())

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for name, default in self.STAMPS.items():
            setattr(self, name, copy.deepcopy(state.get(name, default)))

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for name, default in self.STAMPS.items():
            if name not in self.__dict__:
                setattr(self, name, copy.deepcopy(default))


class Ranker(Stamped):
    """What the scorer needs of a re-ranker: ``forward`` over the input rows, the blend weight chosen on
    validation (a stamp), and how many leading input columns it reads (``n_fields``; None: all of them)."""

    STAMPS: ClassVar[dict[str, Any]] = {**Stamped.STAMPS, "blend_weight": None}

    blend_weight: float | None
    n_fields: int | None = None
