"""The one declaration of every table nightrec reads or writes.

Spark schemas (``schemas.spark``), Great Expectations suites (``schemas.expectations``) and the feature docs
(``docs/tables.md``) are all generated from these declarations; nothing else spells a column list.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The event types the raw contract knows (their weights are settings: features.event_weights).
EVENT_TYPES = ("impression", "view", "click", "cart", "purchase", "rating")

# The small type vocabulary the contracts use; schemas.spark maps it to Spark types, pyarrow_type() to Arrow.
DTYPES = {
    "string",
    "int32",
    "int64",
    "float",
    "double",
    "bool",
    "timestamp",
    "array<string>",
    "array<int32>",
    "map<string,string>",
}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    nullable: bool = False
    doc: str = ""
    key: bool = False
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"column {self.name}: unknown dtype {self.dtype!r}; known: {sorted(DTYPES)}")


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...] = field(default_factory=tuple)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def keys(self) -> list[str]:
        return [c.name for c in self.columns if c.key]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}")


def _c(name: str, dtype: str, doc: str, **kw) -> Column:
    return Column(name=name, dtype=dtype, doc=doc, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Raw inputs
# ---------------------------------------------------------------------------------------------------------------
EVENTS = Table(
    "events",
    "One user-item interaction. Impressions (shown, not engaged) are events too.",
    (
        _c("user_id", "string", "User identifier."),
        _c("item_id", "string", "Item identifier."),
        _c("event_type", "string", f"{', '.join(EVENT_TYPES)} (weights are settings)."),
        _c("ts", "timestamp", "When it happened, UTC."),
        _c("value", "double", "Rating or price paid, where the event has one.", nullable=True),
        _c("session_id", "string", "Session identifier, where known.", nullable=True),
    ),
)

ITEMS = Table(
    "items",
    "The catalog.",
    (
        _c("item_id", "string", "Item identifier.", key=True),
        _c("category", "string", "Top-level category."),
        _c("tags", "array<string>", "Free tags (CSV: '|'-separated).", nullable=True),
        _c("price", "double", "List price.", nullable=True, min_value=0.0),
        _c("available", "bool", "Can be recommended today."),
        _c("created_at", "timestamp", "When the item entered the catalog.", nullable=True),
        _c(
            "attributes", "map<string,string>", "Any categorical side information (CSV: JSON).", nullable=True
        ),
    ),
)

USERS = Table(
    "users",
    "Known users, with optional attributes.",
    (
        _c("user_id", "string", "User identifier.", key=True),
        _c("signup_at", "timestamp", "Sign-up time.", nullable=True),
        _c(
            "attributes",
            "map<string,string>",
            "Categorical attributes; 'segment' feeds the models.",
            nullable=True,
        ),
    ),
)

RAW_TABLES = {t.name: t for t in (EVENTS, ITEMS, USERS)}

# ---------------------------------------------------------------------------------------------------------------
# Lake tables written by build_features, all under lake/<table>/ds=YYYY-MM-DD/
# ---------------------------------------------------------------------------------------------------------------
VOCAB = Table(
    "vocab",
    "Stable integer ids per categorical field. An id keeps its index across nights; new values are appended; "
    "index 0 is out-of-vocabulary.",
    (
        _c("field", "string", "user_id, item_id, category or segment.", key=True),
        _c("value", "string", "The raw value.", key=True),
        _c("idx", "int32", "Index used by the models (>= 1).", min_value=1),
    ),
)

INTERACTIONS = Table(
    "interactions",
    "Deduplicated events before the run date, with ids indexed and event weights applied.",
    (
        _c("user_id", "string", "User identifier."),
        _c("item_id", "string", "Item identifier."),
        _c("user_idx", "int32", "Vocabulary index of the user (0 = OOV).", min_value=0),
        _c("item_idx", "int32", "Vocabulary index of the item (0 = OOV).", min_value=0),
        _c("event_type", "string", "Event type."),
        _c("ts", "timestamp", "Event time, UTC."),
        _c(
            "weight",
            "double",
            "Engagement weight (features.event_weights); 0 = shown or seen without engagement (an impression, "
            "a rating below features.min_rating). A rating at or above it is a graded positive: "
            "event_weights.rating x value / features.rating_scale, so a 5 weighs more than a 4.",
            min_value=0.0,
        ),
    ),
)

# Windowed per-user counts: one column per (event type, window), named by count_column().
COUNT_EVENT_TYPES = EVENT_TYPES
COUNT_WINDOWS = (1, 7, 30)
POPULARITY_WINDOWS = (1, 7, 30)


def count_column(event_type: str, days: int) -> str:
    return f"n_{event_type}_{days}d"


_ROLE = _c(
    "role", "string", "eval = as of the holdout start; serve = as of the run date.", allowed=("eval", "serve")
)

USER_FEATURES = Table(
    "user_features",
    "Per-user features as of a cutoff (point in time: only events before the cutoff).",
    (
        _ROLE,
        _c("user_id", "string", "User identifier.", key=True),
        _c("user_idx", "int32", "Vocabulary index (0 = OOV).", min_value=0),
        _c("segment_idx", "int32", "Vocabulary index of attributes['segment'] (0 = unknown).", min_value=0),
        _c("history", "array<int32>", "Last N engaged item indices, most recent first (may be empty)."),
        _c("n_events", "int64", "Engaged events before the cutoff.", min_value=0),
        _c("days_since_last", "double", "Days from the last engaged event to the cutoff.", nullable=True),
        _c("top_category_idx", "int32", "Most engaged category (0 = none).", min_value=0),
        _c(
            "top_category_share",
            "double",
            "Share of the engaged weight in the top category (null = no engagement).",
            nullable=True,
        ),
        _c(
            "top3_category_share",
            "double",
            "Share of the engaged weight in the top 3 categories.",
            nullable=True,
        ),
        _c(
            "mean_price",
            "double",
            "Mean list price of the engaged items (null = none priced).",
            nullable=True,
        ),
        *(
            _c(count_column(t, w), "int64", f"{t} events in the {w} day(s) before the cutoff.")
            for t in COUNT_EVENT_TYPES
            for w in COUNT_WINDOWS
        ),
    ),
    partition_by=("role",),
)

ITEM_FEATURES = Table(
    "item_features",
    "Per-item features as of a cutoff.",
    (
        _ROLE,
        _c("item_id", "string", "Item identifier.", key=True),
        _c(
            "item_idx",
            "int32",
            "Vocabulary index (0 = OOV: no engagement before the training cutoff).",
            min_value=0,
        ),
        _c("category_idx", "int32", "Vocabulary index of the category.", min_value=0),
        _c("price_bucket", "int32", "Price decile bucket (0 = unknown).", min_value=0, max_value=10),
        _c(
            "popularity",
            "double",
            "Weighted engagement in the popularity window before the cutoff.",
            min_value=0.0,
        ),
        _c("pop_bucket", "int32", "Popularity bucket, log2 scale (0 = none).", min_value=0, max_value=31),
        _c("available", "bool", "Recommendable."),
        _c("tags", "array<string>", "Free tags from the catalog.", nullable=True),
        _c(
            "age_days",
            "double",
            "Days in the catalog at the cutoff (null = unknown or created after the cutoff).",
            nullable=True,
        ),
        *(
            _c(f"popularity_{w}d", "double", f"Weighted engagement in the {w} day(s) before the cutoff.")
            for w in POPULARITY_WINDOWS
        ),
        _c(
            "trend_7d_30d",
            "double",
            "Daily engagement rate over 7 days / over 30 days (1 = steady; null = none in 30 days).",
            nullable=True,
        ),
        _c("impressions_30d", "int64", "Impressions in the 30 days before the cutoff."),
        _c("clicks_30d", "int64", "Clicks in the 30 days before the cutoff."),
        _c(
            "ctr_smoothed",
            "double",
            "clicks_30d / impressions_30d shrunk toward the catalog rate by 20 impressions, capped at 1 "
            "(null = no impressions in the window at all: a rate over a zero denominator is null, never an "
            "error, so ratings-only and purchases-only logs build features).",
            nullable=True,
            min_value=0.0,
            max_value=1.0,
        ),
    ),
    partition_by=("role",),
)

RETRIEVAL_EXAMPLES = Table(
    "retrieval_examples",
    "Weighted positives for the two-tower model, with the user's history as of just before the event.",
    (
        _c(
            "split",
            "string",
            "train, valid or holdout (temporal). Holdout rows (the evaluation window) are read only by the "
            "serving refit (`train.retrieval_refit`), after the model that is evaluated has been trained.",
            allowed=("train", "valid", "holdout"),
        ),
        _c("user_idx", "int32", "User index.", min_value=0),
        _c("segment_idx", "int32", "User segment index.", min_value=0),
        _c("history", "array<int32>", "Last N engaged items before this event, most recent first."),
        _c("item_idx", "int32", "Engaged item.", min_value=0),
        _c("category_idx", "int32", "Category of the engaged item.", min_value=0),
        _c("weight", "double", "Event weight.", min_value=0.0),
        _c(
            "ts",
            "timestamp",
            "Event time (UTC): the day the item's point-in-time inputs are taken at (`train.retrieval_item_state`).",
        ),
    ),
    partition_by=("split",),
)

RANKING_FIELDS = ("user_idx", "segment_idx", "item_idx", "category_idx", "price_bucket", "pop_bucket")

RANKING_EXAMPLES = Table(
    "ranking_examples",
    "Labelled (user, item, day) pairs: engaged (1), shown without engagement (0), and with "
    "features.negatives_per_positive > 0 items drawn from the same day's engaged items (0). DeepFM reads the "
    "positives.",
    (
        _c("split", "string", "train or valid (temporal).", allowed=("train", "valid")),
        _c("label", "float", "1 engaged, 0 not.", min_value=0.0, max_value=1.0),
        _c("user_idx", "int32", "User index.", min_value=0),
        _c("segment_idx", "int32", "User segment index.", min_value=0),
        _c("item_idx", "int32", "Item index.", min_value=0),
        _c("category_idx", "int32", "Item category index.", min_value=0),
        _c("price_bucket", "int32", "Item price bucket.", min_value=0),
        _c("pop_bucket", "int32", "Item popularity bucket.", min_value=0),
        _c(
            "history",
            "array<int32>",
            "Last N engaged items before the example's day (point in time), most recent first.",
        ),
        _c("ts", "timestamp", "Last event of the pair that day (a sampled negative: its positive's)."),
    ),
    partition_by=("split",),
)

FEATURE_TABLES = {
    t.name: t
    for t in (VOCAB, INTERACTIONS, USER_FEATURES, ITEM_FEATURES, RETRIEVAL_EXAMPLES, RANKING_EXAMPLES)
}

# ---------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------
RECS = Table(
    "recs",
    "The top-K list of every user (lake/recs/ds=..., then published as a snapshot).",
    (
        _c("user_id", "string", "User identifier.", key=True),
        _c("rank", "int32", "1 = best.", key=True, min_value=1),
        _c("item_id", "string", "Recommended item."),
        _c("score", "double", "Final score (higher is better; comparable within a user only)."),
        _c("source", "string", "model or fallback (cold start).", allowed=("model", "fallback")),
    ),
)

COLDSTART = Table(
    "coldstart",
    "The night's cold-start lists (lake/recs/ds=.../_COLDSTART.parquet, published beside the snapshot's parts): "
    "what a user without a list of their own is served. Segment '' is the global list.",
    (
        _c(
            "segment",
            "string",
            "The user segment the list is for; '' = everyone (the global list).",
            key=True,
        ),
        _c("rank", "int32", "1 = best.", key=True, min_value=1),
        _c("item_id", "string", "Recommended item."),
        _c("score", "double", "The item's popularity over the training window (as fallback lists score)."),
    ),
)

ALL_TABLES = {**RAW_TABLES, **FEATURE_TABLES, RECS.name: RECS, COLDSTART.name: COLDSTART}
