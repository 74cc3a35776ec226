"""Two-tower retrieval model: a user tower and an item tower whose dot product scores (user, item) pairs.

Both towers end in an L2-normalised vector, so a score is a cosine and the in-batch softmax temperature sets
its scale. Ids beyond a table (users or items newer than the model) are read as 0, the out-of-vocabulary row,
so an older champion keeps working on a newer, larger vocabulary.

Side information travels with the model as an item side table (``TwoTower.set_item_side``): each item's tags
and dense catalog features, indexed by item index. Only catalog attributes go there (tags, price), never
statistics of engagement: a popularity "as of the training cutoff" would tell an example about its own future.
The user tower's dense features are computed from the example's own history (its length, the prices of its
items), so they are point-in-time by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from nightrec.models.configs import AGE_BUCKETS, POP_BUCKETS, TwoTowerConfig
from nightrec.models.stamped import Stamped


def _oov(idx: torch.Tensor, size: int) -> torch.Tensor:
    """Map indices outside ``[0, size)`` to 0 (OOV) instead of failing on a newer vocabulary."""
    return idx.masked_fill((idx >= size) | (idx < 0), 0)


# Dense item features of the side table: price decile / 10, and whether the price is known.
ITEM_DENSE = 2
# Dense user features, from the history: its fill ratio, mean price feature and price coverage of its items.
USER_DENSE = 3


PairBias = Callable[[torch.Tensor], torch.Tensor]


def _mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), nn.ReLU()]
        in_dim = width
    layers.append(nn.Linear(in_dim, out_dim))
    return nn.Sequential(*layers)


def _default_submodule(module: nn.Module, name: str) -> None:
    """Give an unpickled module an optional submodule its class gained later, as None."""
    if name not in module._modules and name not in module.__dict__:
        setattr(module, name, None)


class SequenceEncoder(nn.Module):
    """Self-attention over the history, read at its most recent item: the SASRec recipe for the user tower.

    The history comes most recent first, so position ``p`` means "the p-th latest item" and a learned position
    embedding says how recent each one is. Each example predicts one next item, so the attention is
    bidirectional (SASRec's causal mask exists to train every position of a sequence at once). Padding is
    masked; an empty history reads its first (zero) slot, so no row is all-masked.

    Example::

        enc = SequenceEncoder(TwoTowerConfig(n_users=2, n_items=20, n_categories=1, n_segments=1, dim=8,
                                             history_len=3, user_encoder="attention"))
        enc(torch.tensor([[3, 4, 0], [0, 0, 0]])).shape  # torch.Size([2, 8])
    """

    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.scale = cfg.dim**0.5
        self.item_embedding = nn.Embedding(cfg.n_items, cfg.dim, padding_idx=0, sparse=cfg.use_sparse)
        self.position_embedding = nn.Embedding(cfg.history_len, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.dim,
            cfg.attention_heads,
            dim_feedforward=2 * cfg.dim,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors are an inference fast path that drops padded rows; rows here are short and dense.
        self.encoder = nn.TransformerEncoder(layer, cfg.attention_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        width = min(history.shape[1], self.position_embedding.num_embeddings)
        history = history[:, :width]
        pad = history == 0
        pad[:, 0] = False
        x = self.item_embedding(history) * self.scale + self.position_embedding.weight[:width]
        x = self.dropout(x) * (~pad).unsqueeze(-1)
        return self.norm(self.encoder(x, src_key_padding_mask=pad)[:, 0])


class UserTower(nn.Module):
    """User id + segment + the history (mean of its item embeddings, or ``SequenceEncoder``) +
    history-derived dense features -> MLP -> unit vector.

    Padding (item 0) is left out of the mean; an empty history pools to zeros.

    Example::

        tower = UserTower(TwoTowerConfig(n_users=10, n_items=20, n_categories=3, n_segments=2, dim=8))
        u = tower(torch.tensor([1, 2]), torch.tensor([0, 1]), torch.tensor([[3, 4, 0], [0, 0, 0]]))
        u.shape  # torch.Size([2, 8]), rows of norm 1
    """

    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.n_users, self.n_segments, self.n_items = cfg.n_users, cfg.n_segments, cfg.n_items
        self.history_len = cfg.history_len
        self.user_embedding = nn.Embedding(cfg.n_users, cfg.dim, sparse=cfg.use_sparse)
        # Segments are a handful of rows: a dense table costs nothing and trains with Adam.
        self.segment_embedding = nn.Embedding(cfg.n_segments, cfg.dim)
        if cfg.user_encoder == "attention":
            self.sequence: SequenceEncoder | None = SequenceEncoder(cfg)
        else:
            self.sequence = None
            self.history_embedding = nn.EmbeddingBag(
                cfg.n_items, cfg.dim, mode="mean", padding_idx=0, sparse=cfg.use_sparse
            )
        self.mlp = _mlp(3 * cfg.dim + USER_DENSE, cfg.hidden, cfg.dim)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        _default_submodule(self, "sequence")  # pickled before the attention encoder existed

    def forward(
        self,
        user_idx: torch.Tensor,
        segment_idx: torch.Tensor,
        history: torch.Tensor,
        item_dense: torch.Tensor | None = None,
    ) -> torch.Tensor:
        history = _oov(history, self.n_items)
        sequence = self.sequence
        parts = [
            self.user_embedding(_oov(user_idx, self.n_users)),
            self.segment_embedding(_oov(segment_idx, self.n_segments)),
            sequence(history) if sequence is not None else self.history_embedding(history),
            history_dense(history, item_dense, self.history_len),
        ]
        return F.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)


def history_dense(history: torch.Tensor, item_dense: torch.Tensor | None, history_len: int) -> torch.Tensor:
    """``[B, USER_DENSE]``: share of the ``history_len`` slots filled, mean price feature of its priced items, and the
    share of its items with a known price (zeros without an item side table)."""
    filled = (history > 0).float()
    n = filled.sum(1, keepdim=True)
    if item_dense is None:
        price = known = torch.zeros_like(n)
    else:
        side = item_dense[history]  # [B, H, ITEM_DENSE]
        known_each = side[..., 1] * filled
        known = known_each.sum(1, keepdim=True)
        price = (side[..., 0] * known_each).sum(1, keepdim=True) / known.clamp(min=1)
        known = known / n.clamp(min=1)
    return torch.cat([n / max(history_len, 1), price, known], dim=1)


class ItemTower(nn.Module):
    """Item id + category + mean of the item's tag embeddings + dense catalog features -> MLP -> unit vector.

    The tags and dense features come from the item side table, a pair of buffers indexed by item index and
    saved with the model (all zeros until ``TwoTower.set_item_side``).

    Example::

        tower = ItemTower(TwoTowerConfig(n_users=10, n_items=20, n_categories=3, n_segments=2, dim=8))
        v = tower(torch.arange(20), torch.randint(0, 3, (20,)))
        v.shape  # torch.Size([20, 8])
    """

    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.n_items, self.n_categories = cfg.n_items, cfg.n_categories
        self.item_embedding = nn.Embedding(cfg.n_items, cfg.dim, sparse=cfg.use_sparse)
        self.category_embedding = nn.Embedding(cfg.n_categories, cfg.dim)
        self.tag_embedding = nn.EmbeddingBag(cfg.n_tags, cfg.dim, mode="mean", padding_idx=0)
        self.register_buffer("side_tags", torch.zeros(cfg.n_items, cfg.max_tags, dtype=torch.long))
        self.register_buffer("side_dense", torch.zeros(cfg.n_items, ITEM_DENSE))
        self.mlp = _mlp(3 * cfg.dim + ITEM_DENSE, cfg.hidden, cfg.dim)

    def forward(self, item_idx: torch.Tensor, category_idx: torch.Tensor) -> torch.Tensor:
        idx = _oov(item_idx, self.n_items)
        parts = [
            self.item_embedding(idx),
            self.category_embedding(_oov(category_idx, self.n_categories)),
            self.tag_embedding(self.side_tags[idx]),
            self.side_dense[idx],
        ]
        return F.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)


class StateBias(nn.Module):
    """A learned logit per (popularity bucket, age bucket) of an item as of a day: what is trending now.

    It is added to the logit of a (user, item) pair, not fed to the item tower: with in-batch negatives
    every row's item is popular on its own day, so the tower would never see the contrast. A bias can be
    taken as of the row's day for every item of the batch (a lookup per pair). To score, the state as of one
    day sits in two buffers (``TwoTower.set_item_state``) and the bias rides in the vectors' last coordinate.
    """

    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.table = nn.Embedding(POP_BUCKETS * AGE_BUCKETS, 1)
        nn.init.zeros_(self.table.weight)
        self.register_buffer("pop", torch.zeros(cfg.n_items, dtype=torch.long))
        self.register_buffer("age", torch.zeros(cfg.n_items, dtype=torch.long))

    def forward(self, pop: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        """The logit of each ``(pop, age)`` pair (any shape; float, same shape)."""
        return self.of_key(pop.clamp(0, POP_BUCKETS - 1) * AGE_BUCKETS + age.clamp(0, AGE_BUCKETS - 1))

    def of_key(self, key: torch.Tensor) -> torch.Tensor:
        """The logit of each ``pop * AGE_BUCKETS + age`` key (any shape)."""
        return self.table(key).squeeze(-1)

    def installed(self, item_idx: torch.Tensor) -> torch.Tensor:
        """The logit of each item as of the installed day."""
        idx = _oov(item_idx, self.pop.shape[0])
        return self(self.pop[idx], self.age[idx])


class TwoTower(Stamped):
    """The retrieval model: ``score(user, item) = user_vectors(...) @ item_vectors(...).T``.

    ``forward`` takes the packed input ``[user_idx, segment_idx, history...]`` (what an MLflow signature can
    describe as one int64 tensor) and returns user vectors.

    Example::

        cfg = TwoTowerConfig(n_users=10, n_items=20, n_categories=3, n_segments=2, dim=8, history_len=3)
        model = TwoTower(cfg)
        u = model(torch.tensor([[1, 0, 3, 4, 0]]))  # [1, 8]
        v = model.item_vectors(torch.arange(20), torch.zeros(20, dtype=torch.long))  # [20, 8]
        scores = u @ v.T  # [1, 20]
    """

    # tag_index: tag -> index of the item side's tag vocabulary (1-based), for readers of its tags.
    STAMPS: ClassVar[dict[str, Any]] = {**Stamped.STAMPS, "tag_index": None}
    tag_index: dict[str, int] | None

    def __init__(self, cfg: TwoTowerConfig) -> None:
        super().__init__()
        self.config = cfg
        self.user_tower = UserTower(cfg)
        self.item_tower = ItemTower(cfg)
        self.state_bias: StateBias | None = StateBias(cfg) if cfg.item_state else None

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        _default_submodule(self, "state_bias")  # pickled before item state existed

    def unit_user_vectors(
        self, user_idx: torch.Tensor, segment_idx: torch.Tensor, history: torch.Tensor
    ) -> torch.Tensor:
        """The user tower's unit vectors ``[B, D]`` (training; ``user_vectors`` scores)."""
        return self.user_tower(user_idx, segment_idx, history, self.item_tower.side_dense)

    def unit_item_vectors(self, item_idx: torch.Tensor, category_idx: torch.Tensor) -> torch.Tensor:
        """The item tower's unit vectors ``[N, D]`` (training; ``item_vectors`` scores)."""
        return self.item_tower(item_idx, category_idx)

    def user_vectors(
        self, user_idx: torch.Tensor, segment_idx: torch.Tensor, history: torch.Tensor
    ) -> torch.Tensor:
        """User vectors from ``[B]``, ``[B]`` and a 0-padded ``[B, H]`` history: unit ``[B, D]``, or
        ``[B, D + 1]`` ending in 1 with item state (the item side's last coordinate is its state bias)."""
        u = self.unit_user_vectors(user_idx, segment_idx, history)
        if self.state_bias is None:
            return u
        return torch.cat([u, u.new_ones(u.shape[0], 1)], dim=1)

    def set_item_side(self, tags: torch.Tensor, dense: torch.Tensor) -> None:
        """Install the item side table: ``tags`` int64 ``[n_items, max_tags]`` (0-padded tag indices) and
        ``dense`` float ``[n_items, ITEM_DENSE]``, row = item index. Saved with the model."""
        tower = self.item_tower
        if tags.shape != tower.side_tags.shape or dense.shape != tower.side_dense.shape:
            raise ValueError(
                f"item side table shapes {tuple(tags.shape)}, {tuple(dense.shape)} do not match the model's "
                f"{tuple(tower.side_tags.shape)}, {tuple(tower.side_dense.shape)}"
            )
        n_tags = tower.tag_embedding.num_embeddings
        if tags.numel() and (int(tags.max()) >= n_tags or int(tags.min()) < 0):
            raise ValueError(
                f"tag indices must lie in [0, {n_tags}); got [{int(tags.min())}, {int(tags.max())}]"
            )
        tower.side_tags.copy_(tags)
        tower.side_dense.copy_(dense)

    def set_item_state(self, pop: torch.Tensor, age: torch.Tensor) -> None:
        """Install the popularity and age buckets (``[n_items]`` each, row = item index) as of the day the
        model scores for. Saved with the model."""
        bias = self.state_bias
        if bias is None:
            raise ValueError("this two-tower was built without item state (TwoTowerConfig.item_state)")
        bias.pop.copy_(pop)
        bias.age.copy_(age)

    def item_vectors(self, item_idx: torch.Tensor, category_idx: torch.Tensor) -> torch.Tensor:
        """Item vectors from ``[N]`` item and category indices: unit ``[N, D]``, or ``[N, D + 1]`` ending in
        ``temperature * state bias`` as of the installed day, so that ``user @ item`` ranks as the trained logit."""
        v = self.unit_item_vectors(item_idx, category_idx)
        bias = self.state_bias
        if bias is None:
            return v
        return torch.cat(
            [v, self.config.temperature * bias.installed(item_idx).unsqueeze(1).to(v.dtype)], dim=1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """User vectors from the packed input ``[B, 2 + H]`` = ``[user_idx, segment_idx, history...]``."""
        return self.user_vectors(x[:, 0], x[:, 1], x[:, 2:])


def in_batch_softmax_loss(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    item_idx: torch.Tensor,
    temperature: float,
    weight: torch.Tensor | None = None,
    log_q: torch.Tensor | None = None,
    pair_bias: PairBias | None = None,
) -> torch.Tensor:
    """Sampled softmax over the batch's items, each user's own item being the positive.

    Another row with the same item is the user's positive too, so it is no negative for this row; for every
    other row each copy counts as a negative, as in the textbook B x B form. The logits are computed against
    the batch's distinct items only (``U <= B`` columns) with ``log(count)`` added to each column, which gives
    the same loss and gradients with a B x U matmul and no B x B duplicate mask: on skewed (real) batches U
    is a fraction of B and the loss, most of a CPU step, costs about a third.

    Args:
        user_vecs: ``[B, D]`` user vectors.
        item_vecs: ``[B, D]`` vectors of each row's positive item (rows with the same item hold the same vector).
        item_idx: ``[B]`` item indices of the positives (finds in-batch duplicates, indexes ``log_q``).
        temperature: Logits are ``u . v / temperature``.
        weight: ``[B]`` example weights; the loss is their weighted mean. None = all 1.
        log_q: ``[n_items]`` log sampling probability of each item. In-batch negatives are drawn in proportion
            to popularity, so without this correction popular items are over-penalised (Yi et al., 2019).
        pair_bias: ``pair_bias(items)``, for the batch's distinct items ``[U]`` (sorted), gives ``[B, U]``
            logits added to each row's (the item state as of the row's day, ``StateBias``).

    Returns:
        The scalar loss (float32, also under bf16 autocast).
    """
    items, target, counts = torch.unique(item_idx, return_inverse=True, return_counts=True)
    rows = torch.arange(item_idx.shape[0], device=item_idx.device)
    first = torch.full_like(items, item_idx.shape[0]).scatter_reduce_(0, target, rows, "amin")
    # Scale the B x D side, not the B x U logits, and edit the logits in place: the matmul's backward needs
    # only its inputs, and each B x U pass saved is a few percent of a step.
    logits = ((user_vecs / temperature) @ item_vecs.index_select(0, first).T).float()
    log_count = counts.float().log()
    bias = log_count if log_q is None else log_count - log_q[_oov(items, log_q.shape[0])]
    logits.add_(bias.unsqueeze(0))
    if pair_bias is not None:
        logits.add_(pair_bias(items).float())
    # The row's own item enters once (its duplicates are positives, not negatives), so it loses the count.
    logits.index_put_((rows, target), -log_count[target], accumulate=True)
    ce = F.cross_entropy(logits, target, reduction="none")
    if weight is None:
        return ce.mean()
    weight = weight.float()
    return (ce * weight).sum() / weight.sum().clamp_min(1e-12)


def full_softmax_loss(
    user_vecs: torch.Tensor,
    all_item_vecs: torch.Tensor,
    item_idx: torch.Tensor,
    temperature: float,
    weight: torch.Tensor | None = None,
    total_weight: torch.Tensor | None = None,
    scale: float = 1.0,
    pair_bias: PairBias | None = None,
) -> torch.Tensor:
    """Softmax over the whole catalog, each row's own item the positive (no sampling, so no logQ).

    Args:
        user_vecs: ``[B, D]`` user vectors.
        all_item_vecs: ``[N, D]`` vectors of every item index.
        item_idx: ``[B]`` the positives.
        temperature: Logits are ``u . v / temperature``.
        weight: ``[B]`` example weights; None = all 1.
        total_weight: The denominator of the weighted mean (several processes: the whole batch's); None =
            ``weight.sum()``.
        scale: Multiplies the loss (several processes: their number, as DDP averages their gradients).
        pair_bias: As for ``in_batch_softmax_loss``, given every item index.

    Returns:
        The scalar loss (float32).
    """
    logits = ((user_vecs / temperature) @ all_item_vecs.T).float()
    if pair_bias is not None:
        logits.add_(pair_bias(torch.arange(all_item_vecs.shape[0], device=logits.device)).float())
    ce = F.cross_entropy(logits, _oov(item_idx, all_item_vecs.shape[0]), reduction="none")
    w = torch.ones_like(ce) if weight is None else weight.float()
    denominator = w.sum() if total_weight is None else total_weight
    return (ce * w).sum() * scale / denominator.clamp_min(1e-12)
