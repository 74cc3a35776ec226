"""Model hyperparameters as plain dataclasses (nanoGPT's ``GPTConfig`` style), logged to MLflow as-is.

Table sizes come from the run's vocabulary (``n_f = max idx + 1``; index 0 is padding / out-of-vocabulary).
Build them with :meth:`TwoTowerConfig.from_vocab` / :meth:`DeepFMConfig.from_vocab` from
``nightrec.training.datasets.vocab_sizes``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nightrec.models.ranker_inputs import AFFINITY_BUCKETS, RETRIEVAL_BUCKETS
from schemas.tables import RANKING_FIELDS

# Bucketed item features have fixed ranges (schemas.tables.ITEM_FEATURES): price 0..10, popularity 0..31.
PRICE_BUCKETS = 11
POP_BUCKETS = 32
# Item age as of a day (nightrec.training.item_popularity): 0 = no engagement yet, k = floor(log2(days)) + 1.
AGE_BUCKETS = 16

# DeepFM's input fields: the ranking examples' fields, then the ones derived from the user's history
# (nightrec.models.ranker_inputs). A ranker trained before the derived fields existed reads the first six.
RANKER_FIELDS = (*RANKING_FIELDS, "retrieval_bucket", "affinity_bucket")

# Measured on the 2-core CPU (two-tower, batch 2048): sparse id tables + SparseAdam lose ~15% at 7k id rows,
# break even near 60k and win 2x at 250k (ECOSYSTEM 6). ``sparse=None`` picks by this threshold.
SPARSE_MIN_ROWS = 64_000

USER_ENCODERS = ("mean", "attention")
RETRIEVAL_LOSSES = ("in_batch", "full")

# The vocabulary (or fixed range) sizing each ranking field; ties DeepFM's field order to RANKING_FIELDS.
_FIELD_VOCAB = {
    "user_idx": "user_id",
    "segment_idx": "segment",
    "item_idx": "item_id",
    "category_idx": "category",
    "price_bucket": "price_bucket",
    "pop_bucket": "pop_bucket",
    "retrieval_bucket": "retrieval_bucket",
    "affinity_bucket": "affinity_bucket",
}


@dataclass(frozen=True)
class TwoTowerConfig:
    """Two-tower retrieval model.

    Attributes:
        n_users: User id table size (max user idx + 1).
        n_items: Item id table size (max item idx + 1).
        n_categories: Category table size.
        n_segments: Segment table size.
        dim: Output (and id embedding) dimension of both towers.
        history_len: Width of the padded history the user tower reads.
        hidden: Hidden layer widths of each tower's MLP.
        temperature: Softmax temperature of the in-batch loss (vectors are L2-normalised).
        sparse: Sparse gradients for the id tables (trained with SparseAdam); None = only when the id tables
            hold at least ``SPARSE_MIN_ROWS`` rows, where it pays.
        logq: Subtract log sampling probability of in-batch negatives (popularity correction).
        n_tags: Tag table size of the item tower (index 0 = padding / unknown tag).
        max_tags: Tags kept per item (the item side table's width).
        user_encoder: How the user tower reads the history: ``mean`` (the mean of its item embeddings) or
            ``attention`` (self-attention over the items in recency order, read at the most recent one: the
            SASRec recipe, bidirectional since each example predicts one next item).
        attention_layers: Transformer layers of the ``attention`` encoder.
        attention_heads: Attention heads per layer (must divide ``dim``).
        dropout: Dropout of the ``attention`` encoder (embeddings and layers).
        loss: ``in_batch`` (sampled softmax over the batch's items, logQ-corrected) or ``full`` (softmax
            over the whole catalog: every item tower output each step, so for catalogs of thousands).
        item_state: Add a learned logit per (popularity bucket, age bucket) of the item as of a day
            (``two_tower.StateBias``): each example's day in training, a fixed day (the model's
            ``set_item_state``) when it scores.
    """

    n_users: int
    n_items: int
    n_categories: int
    n_segments: int
    dim: int = 64
    history_len: int = 20
    hidden: tuple[int, ...] = (128,)
    temperature: float = 0.1
    sparse: bool | None = None
    logq: bool = True
    n_tags: int = 1
    max_tags: int = 8
    user_encoder: str = "mean"
    attention_layers: int = 2
    attention_heads: int = 2
    dropout: float = 0.2
    loss: str = "in_batch"
    item_state: bool = False

    def __post_init__(self) -> None:
        for name in (
            "n_users",
            "n_items",
            "n_categories",
            "n_segments",
            "dim",
            "history_len",
            "n_tags",
            "max_tags",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"TwoTowerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"TwoTowerConfig.temperature must be > 0, got {self.temperature}")
        if self.user_encoder not in USER_ENCODERS:
            raise ValueError(
                f"TwoTowerConfig.user_encoder must be one of {USER_ENCODERS}, got {self.user_encoder!r}"
            )
        if self.loss not in RETRIEVAL_LOSSES:
            raise ValueError(f"TwoTowerConfig.loss must be one of {RETRIEVAL_LOSSES}, got {self.loss!r}")
        if self.user_encoder == "attention" and (
            self.attention_layers < 1 or self.dim % self.attention_heads
        ):
            raise ValueError(
                f"TwoTowerConfig: attention_layers must be >= 1 and attention_heads must divide dim "
                f"(got {self.attention_layers} layers, {self.attention_heads} heads, dim {self.dim})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TwoTowerConfig.dropout must lie in [0, 1), got {self.dropout}")

    @property
    def use_sparse(self) -> bool:
        return self.sparse if self.sparse is not None else self.n_users + self.n_items >= SPARSE_MIN_ROWS

    @classmethod
    def from_vocab(cls, sizes: dict[str, int], **kwargs: Any) -> TwoTowerConfig:
        """Config sized from ``vocab_sizes()`` output; ``kwargs`` set the hyperparameters."""
        return cls(
            n_users=sizes["user_id"],
            n_items=sizes["item_id"],
            n_categories=sizes["category"],
            n_segments=sizes["segment"],
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeepFMConfig:
    """DeepFM ranking model.

    Attributes:
        field_dims: Table size of each field, in ``RANKER_FIELDS`` order.
        embed_dim: Shared field embedding dimension (FM and deep part).
        hidden: Hidden layer widths of the deep MLP.
        dropout: Dropout after each hidden layer.
        sparse: Sparse gradients for the field tables (trained with SparseAdam); None = only when the tables
            hold at least ``SPARSE_MIN_ROWS`` rows.
    """

    field_dims: tuple[int, ...]
    embed_dim: int = 16
    hidden: tuple[int, ...] = (128, 64)
    dropout: float = 0.1
    sparse: bool | None = None

    def __post_init__(self) -> None:
        if len(self.field_dims) != len(RANKER_FIELDS):
            raise ValueError(
                f"DeepFMConfig.field_dims has {len(self.field_dims)} entries, expected {len(RANKER_FIELDS)} "
                f"({', '.join(RANKER_FIELDS)})"
            )
        if min(self.field_dims) < 1:
            raise ValueError(f"DeepFMConfig.field_dims must all be >= 1, got {self.field_dims}")

    @property
    def use_sparse(self) -> bool:
        return self.sparse if self.sparse is not None else sum(self.field_dims) >= SPARSE_MIN_ROWS

    @classmethod
    def from_vocab(cls, sizes: dict[str, int], **kwargs: Any) -> DeepFMConfig:
        """Config sized from ``vocab_sizes()`` output (bucket fields use their fixed ranges)."""
        fixed = {
            "price_bucket": PRICE_BUCKETS,
            "pop_bucket": POP_BUCKETS,
            "retrieval_bucket": RETRIEVAL_BUCKETS,
            "affinity_bucket": AFFINITY_BUCKETS,
        }
        dims = tuple({**fixed, **sizes}[_FIELD_VOCAB[f]] for f in RANKER_FIELDS)
        return cls(field_dims=dims, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
