"""Logistic regression over one-hot categorical fields: the baseline DeepFM's AUC must beat.

It is DeepFM's first-order term alone (one weight per field value plus a bias), so the gap between the two is
what the FM and deep parts add.
"""

from __future__ import annotations

import torch
from torch import nn


class LogisticRegression(nn.Module):
    """``forward(x: LongTensor[B, F]) -> logits [B]``; an index beyond its field's table is read as 0 (OOV).

    Example::

        lr = LogisticRegression((10, 3, 20))
        lr(torch.tensor([[1, 2, 5], [99, 0, 19]])).shape  # torch.Size([2])
    """

    def __init__(self, field_dims: tuple[int, ...]) -> None:
        super().__init__()
        dims = torch.tensor(field_dims, dtype=torch.long)
        self.register_buffer("field_dims", dims, persistent=False)
        self.register_buffer("offsets", torch.cumsum(dims, 0) - dims, persistent=False)
        # Dense gradients: the table is F-wide and one column, so Adam's full update costs nothing here.
        self.weight = nn.Embedding(int(dims.sum()), 1)
        nn.init.zeros_(self.weight.weight)
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.masked_fill((x >= self.field_dims) | (x < 0), 0) + self.offsets
        return self.bias + self.weight(x).squeeze(-1).sum(dim=1)
