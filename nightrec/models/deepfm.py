"""DeepFM ranking model (Guo et al., 2017), split into small Arch modules in the TorchRec style.

``logit = bias + first_order + FM second order + OverArch(DeepArch(field embeddings))``; the FM and the deep
part share the field embeddings. Input is one int64 row per (user, item) pair in
``nightrec.models.configs.RANKER_FIELDS`` order; an index beyond its field's table (an id newer than the model) is
read as 0 (OOV).
"""

from __future__ import annotations

import torch
from torch import nn

from nightrec.models.configs import DeepFMConfig
from nightrec.models.stamped import Ranker


class FeaturesEmbedding(nn.Module):
    """All fields in one table (per-field row offsets), plus a one-dimensional first-order weight per row.

    One table means one sparse gather per batch instead of one per field.

    Example::

        emb = FeaturesEmbedding((10, 3, 20), embed_dim=4)
        e, w = emb(torch.tensor([[1, 2, 5], [99, 0, 19]]))  # 99 >= 10: read as OOV row 0
        e.shape, w.shape  # torch.Size([2, 3, 4]), torch.Size([2, 3])
    """

    def __init__(self, field_dims: tuple[int, ...], embed_dim: int, sparse: bool = True) -> None:
        super().__init__()
        dims = torch.tensor(field_dims, dtype=torch.long)
        self.register_buffer("field_dims", dims, persistent=False)
        self.register_buffer("offsets", torch.cumsum(dims, 0) - dims, persistent=False)
        total = int(dims.sum())
        self.embedding = nn.Embedding(total, embed_dim, sparse=sparse)
        self.linear = nn.Embedding(total, 1, sparse=sparse)
        nn.init.normal_(self.embedding.weight, std=0.01)
        nn.init.zeros_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.masked_fill((x >= self.field_dims) | (x < 0), 0) + self.offsets
        return self.embedding(x), self.linear(x).squeeze(-1)


class FMArch(nn.Module):
    """Second-order factorisation machine term: sum over field pairs of <e_i, e_j>, in O(F * D).

    Example::

        FMArch()(torch.randn(2, 6, 4)).shape  # torch.Size([2])
    """

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_square = emb.pow(2).sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class DeepArch(nn.Module):
    """MLP over the concatenated field embeddings.

    Example::

        deep = DeepArch(in_features=24, hidden=(32, 16), dropout=0.1)
        deep(torch.randn(2, 6, 4)).shape  # torch.Size([2, 16])
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU(), nn.Dropout(dropout)]
            in_features = width
        self.out_features = in_features
        self.mlp = nn.Sequential(*layers)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.mlp(emb.flatten(start_dim=1))


class OverArch(nn.Module):
    """Final projection of the deep features to one logit per row.

    Example::

        OverArch(16)(torch.randn(2, 16)).shape  # torch.Size([2])
    """

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class DeepFM(Ranker):
    """DeepFM: ``forward(x: LongTensor[B, F]) -> logits [B]`` (apply a sigmoid for probabilities).

    Example::

        model = DeepFM(DeepFMConfig(field_dims=(10, 3, 20, 5, 11, 32), embed_dim=4, hidden=(16,)))
        model(torch.tensor([[1, 2, 5, 0, 3, 7]])).shape  # torch.Size([1])
    """

    def __init__(self, cfg: DeepFMConfig) -> None:
        super().__init__()
        self.config = cfg
        self.features = FeaturesEmbedding(cfg.field_dims, cfg.embed_dim, sparse=cfg.use_sparse)
        self.fm = FMArch()
        self.deep = DeepArch(len(cfg.field_dims) * cfg.embed_dim, cfg.hidden, cfg.dropout)
        self.over = OverArch(self.deep.out_features)
        self.bias = nn.Parameter(torch.zeros(()))

    @property
    def n_fields(self) -> int:  # type: ignore[override]
        """How many leading input columns it reads (a ranker from before the derived fields reads fewer)."""
        return len(self.config.field_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        emb, first_order = self.features(x)
        return self.bias + first_order.sum(dim=1) + self.fm(emb) + self.over(self.deep(emb))
