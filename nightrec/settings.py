"""The one typed settings object.

Build it at the edge (CLI command or flow start) with ``Settings()`` and pass it down. Values come from code
defaults < environment variables / ``.env`` (prefix ``NIGHTREC_``, nested sections with ``__``, e.g.
``NIGHTREC_TRAIN__EPOCHS=3``). Locations default to the embedded layout under ``./.nightrec/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from nightrec.gate_settings import GateSettings
from schemas.manifest import CHANNEL_NAME, CHANNELS_PREFIX, DEFAULT_CHANNEL
from schemas.tables import EVENT_TYPES


class SparkSettings(BaseModel):
    remote: str | None = Field(
        None,
        pattern=r"^sc://",
        description="A Spark Connect server (sc://host:15002) to run the Spark stages on, instead of a JVM "
        "started in this process: a long-running server stays warm from night to night (its JIT-compiled "
        "code and its class cache), and the worker holds no JVM. The server owns its master, memory and JVM "
        "options; the session settings below (shuffle partitions, extra_conf) still apply.",
    )
    master: str = "local[2]"
    driver_memory: str = "4g"
    shuffle_partitions: int = 4
    # Small on purpose in tests: an accidental collect() of large data fails instead of OOMing the driver.
    max_result_size: str = "512m"
    class_archive: bool = Field(
        True,
        description="Start the driver JVM from the class-data-sharing archive that `make install` builds "
        "(nightrec.io.spark_archive, built by nightrec.ops.spark_archive), where there is one: about a second less start-up per stage.",
    )
    extra_conf: dict[str, str] = Field(default_factory=dict)
    release_after_stages: bool = Field(
        True,
        description="A night in one process ends its Spark driver JVM once the Spark stages are done, so the "
        "heap it grew goes back for training and scoring (kept when scoring runs on Spark).",
    )


class FeatureSettings(BaseModel):
    """Temporal split and feature windows (days are whole UTC days before the run date)."""

    holdout_days: int = Field(7, ge=1, description="Held-out evaluation window, just before the run date.")
    holdout_min_users: int = Field(
        200,
        ge=0,
        description="Grow the holdout a week at a time until this many users engaged both before and in it "
        "(0 = always holdout_days): a sparse log's single week holds too few users to compare policies.",
    )
    max_holdout_days: int = Field(35, ge=1, description="The longest the holdout grows to.")
    min_train_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="The holdout does not grow past the point where less than this share of the engaged "
        "events is left before the validation window, for training.",
    )
    valid_days: int = Field(7, ge=1, description="Validation window (early stopping), before the holdout.")
    history_len: int = Field(20, ge=1, le=200, description="Last N items kept as the user's history.")
    popularity_days: int = Field(30, ge=1, description="Window for item popularity.")
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "impression": 0.0,
            "view": 1.0,
            "click": 1.0,
            "rating": 1.0,
            "cart": 2.0,
            "purchase": 3.0,
        },
        description="Weight of each event type; 0 means 'shown but not engaged' (a ranking negative).",
    )
    min_rating: float = Field(
        3.5, description="Rating events below this value are seen but not liked: weight 0 (a negative)."
    )
    rating_weight: Literal["value", "constant"] = Field(
        "value",
        description="Weight of a rating at or above min_rating: value = event_weights.rating x value / "
        "rating_scale (a 5 counts more than a 4), constant = event_weights.rating.",
    )
    rating_scale: float = Field(5.0, gt=0, description="The top of the rating scale (value / scale).")
    unseen_event_types: list[str] = Field(
        default_factory=lambda: ["impression"],
        description="Event types that do not make an item 'seen' (seen items are never recommended).",
    )
    negatives_per_positive: int = Field(
        0,
        ge=0,
        le=20,
        description="Negatives drawn per positive into the ranking examples (from the items engaged that day), "
        "for consumers of the table that train on its labels. 0 by default: the pipeline's ranker reads the "
        "positives and draws its negatives from the two-tower's candidates (nightrec.training.stages), and "
        "at 100M events the drawn rows were 46% of the table (bench/results/night_scale.md).",
    )
    seed: int = 7


class TrainSettings(BaseModel):
    seed: int = 7
    device: str = Field("auto", description="auto, cpu or cuda")
    retrieval_epochs: int = 6
    retrieval_batch_size: int = 2048
    retrieval_dim: int = 64
    retrieval_lr: float = 0.01
    retrieval_temperature: float = 0.1
    retrieval_user_encoder: Literal["mean", "attention"] = Field(
        "mean",
        description="How the two-tower's user tower reads the history: the mean of its item embeddings, or "
        "self-attention over it in recency order (SASRec-style). The mean stays the default: attention did not "
        "win on the ratings profile and trains ~15x slower on CPU (bench/results/quality_learned.md).",
    )
    retrieval_item_state: bool = Field(
        True,
        description="The two-tower adds a learned logit per (popularity, age) bucket of the item, taken as of "
        "each example's day in training and as of the day it scores for when it serves (the run date for the "
        "serving twin). On by default: on the ratings profile the published NDCG@10 went from 0.186 to 0.268 "
        "(bench/results/quality_learned.md).",
    )
    retrieval_loss: Literal["in_batch", "full"] = Field(
        "in_batch",
        description="The two-tower's softmax: over the batch's items (logQ-corrected, any catalog size) or over "
        "the whole catalog each step (exact, for catalogs of thousands of items; not better on the ratings "
        "profile with the attention encoder, bench/results/quality_learned.md).",
    )
    retrieval_refit: bool = Field(
        True,
        description="After the two-tower is trained (and before it is evaluated), train its serving twin on "
        "every window up to the run date (train, validation and holdout) for the epochs early stopping chose. "
        "The gate measures the evaluated model; the twin makes the lists when that model goes live, so the "
        "last weeks are in the weights that serve (bench/RESULTS.md has the figures behind the default).",
    )
    ranking_epochs: int = 6
    ranking_batch_size: int = 4096
    ranking_dim: int = 16
    ranking_lr: float = 0.003
    ranking_candidate_negatives: int = Field(
        4, ge=0, le=50, description="Negatives per positive drawn from the retrieval candidates."
    )
    ranking_valid_days: int = Field(
        2,
        ge=1,
        description="Last days of the validation window that early-stop the ranker (it trains on the rest).",
    )
    ranking_examples_from: Literal["valid", "train_and_valid"] = Field(
        "valid",
        description="Where the ranker's training examples come from: the validation window only (its retrieval "
        "ranks are out-of-sample, as when serving), or the training window too (more rows, in-sample ranks).",
    )
    ranking_point_in_time_popularity: bool = Field(
        True,
        description="The ranker's examples and candidates get each item's popularity bucket as of the example's "
        "day, instead of as of the holdout start (which counts the days after the example, its own among them). "
        "On by default: it removes that leak, and its lists are not worse (bench/results/quality_learned.md).",
    )
    patience: int = 2
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Training processes per model: 1 trains in the stage's own process; more launches them "
        "with torchrun (DistributedDataParallel: gloo on CPU, nccl with one GPU each) and the same reuse "
        "and checkpoints as one process (a checkpoint resumes with as many processes as wrote it).",
    )
    warm_start: bool = Field(
        True,
        description="Start each model from the weights of the newest version evaluated for an earlier night "
        "(never a serving twin) where its architecture is the same and tonight's vocabulary extends its own, "
        "and train warm_epochs epochs instead of *_epochs (nightrec.training.warm). The source version is "
        "logged as warm_from.",
    )
    warm_epochs: int = Field(
        2, ge=1, le=200, description="Epochs of a warm-started fit (early stopping still on)."
    )
    max_examples: int | None = Field(
        3_000_000,
        ge=1,
        description="The night's training budget in examples, per model: a split with more rows is read as "
        "a seeded uniform sample of about this many (every day and user in proportion), streamed from the "
        "Parquet files, so memory holds the sample and not the split. The serving twin and refits sample "
        "their windows to the same total. None = every example (logged in MLflow as n_train of n_available).",
    )
    warm_max_examples: int | None = Field(
        1_000_000,
        ge=1,
        description="The training budget of a warm-started fit, per model (the lower of this and "
        "max_examples): the source already fit every earlier night's sample, so a fine-tune on a fresh "
        "third of the budget keeps night 2 well under night 1 (bench/results/night_scale.md). None = "
        "max_examples.",
    )
    max_valid_examples: int | None = Field(
        100_000,
        ge=1,
        description="Validation examples per model (a uniform sample): each epoch scores every one against "
        "the whole catalog, which at 100K items costs about a second per 10K examples on 2 cores.",
    )
    max_minutes: float | None = Field(
        30.0,
        gt=0,
        description="The night's training budget in minutes, per model and fit: training stops at the first "
        "batch past it, validates that epoch and keeps the best epoch so far (stopped_by_budget = 1 in "
        "MLflow). None = the epochs alone decide.",
    )
    checkpoint_dir: str | None = Field(
        None, description="Per-epoch training checkpoints (resume after a kill). Default: <home>/checkpoints"
    )


class ScoringSettings(BaseModel):
    top_k: int = Field(20, ge=1, le=1000)
    n_candidates: int = Field(200, ge=1, le=5000)
    user_chunk_size: int = Field(4096, ge=1)
    buffer_mb: int = Field(
        1024,
        ge=16,
        description="The exact candidate search's score buffer (users x items, reused per chunk).",
    )
    rerank_weight: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Final score = w * ranker + (1 - w) * retrieval (both standardised per user); "
        "None = the weight chosen on the validation window when the ranker was trained.",
    )
    max_per_category: int | None = Field(None, description="Diversity cap per category in a list.")
    blocklist: list[str] = Field(default_factory=list, description="Item ids never recommended.")
    item_boosts: dict[str, float] = Field(
        default_factory=dict,
        description="Item id -> added to the item's final score, in standard deviations of the user's "
        "candidate scores (negative demotes).",
    )
    category_boosts: dict[str, float] = Field(
        default_factory=dict, description="Category value -> boost of its items, as item_boosts."
    )
    index: Literal["exact", "ivf"] = Field(
        "exact",
        description="Candidate search: exact = every allowed item scored; ivf = FAISS IndexIVFFlat (needs "
        "faiss-cpu), approximate, for large catalogs (its recall is measured by bench/precompute.py --ann).",
    )
    ivf_lists: int | None = Field(None, ge=1, description="IVF clusters (None = about 4 * sqrt(items)).")
    ivf_probe: int = Field(16, ge=1, description="IVF clusters visited per user (recall vs speed).")
    engine: Literal["local", "spark"] = Field(
        "local",
        description="Where users are scored: local = chunks streamed in this process; spark = the same scorer "
        "on Spark executors (mapInArrow, models and catalog broadcast), for user counts past one machine.",
    )
    segment_fallback_min_users: int = Field(
        20,
        ge=1,
        description="Cold users of a segment with at least this many users engaged in the popularity window get "
        "the segment's popular items of that window; others (and unknown segments) get the global popular list.",
    )
    matmul_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Precision of the user x item product: auto = bf16 where the CPU has bf16 dot products "
        "(AVX-512 BF16, AMX) or on CUDA, else fp32. bf16 candidates are rescored in fp32.",
    )


class PromotionSettings(BaseModel):
    """The promotion gate: every candidate policy is measured on the same held-out users; the best one that
    beats the live policy at the stated confidence (a paired bootstrap over users) replaces it."""

    metric: str = "ndcg_at_10"
    tolerance: float = Field(
        0.005,
        ge=0.0,
        description="A retrained instance of the live kind (tonight's learned pair for last night's) replaces "
        "it unless its mean is more than this below, or it is significantly worse.",
    )
    k_eval: list[int] = Field(default_factory=lambda: [10, 20])
    confidence: float = Field(
        0.95, gt=0.5, lt=1.0, description="Two-sided confidence of the paired interval."
    )
    bootstrap_samples: int = Field(2000, ge=100, le=100_000)
    max_eval_users: int | None = Field(
        100_000,
        ge=1,
        description="Every candidate is measured on the same evaluation users: a seeded uniform sample of this "
        "many where the holdout has more (the paired interval over 100K users is a few thousandths of NDCG "
        "wide, and each candidate's lists cost time per user). None = every one.",
    )
    eval_seed: int = Field(11, description="Seed of that sample.")
    min_eval_users: int = Field(
        50,
        ge=1,
        description="Below this many evaluation users the live policy is kept (a first night takes the best "
        "baseline): a difference over fewer users is mostly noise.",
    )
    popularity_windows: list[int] = Field(
        default_factory=lambda: [7, 30, 0],
        description="Candidate popularity baselines: engagement over the last N days (0 = all history).",
    )
    ease: bool = Field(True, description="EASE is a candidate.")
    ease_max_items: int = Field(
        5_000,
        ge=2,
        description="EASE inverts an items x items matrix and scores every user against it: a catalog with "
        "more items gets EASE over its this-many most engaged (before the holdout), named in the policy's "
        "params (max_items); the rest never appear in its lists. 5,000 keeps the inverse at seconds and a "
        "million users' lists at minutes on 2 cores.",
    )
    ease_l2_grid: list[float] = Field(
        default_factory=lambda: [50.0, 200.0, 500.0, 2000.0, 8000.0, 30000.0],
        description="EASE's L2 weights tried on the validation window; the best is measured on the holdout.",
    )
    ease_recency_grid: list[float] = Field(
        default_factory=lambda: [0.0, 0.1, 0.3, 1.0, 3.0],
        description="Weights of recent popularity (scaled to [0, 1]) added to EASE's scores, tried with each L2 "
        "on the validation window (0 = plain EASE).",
    )
    ease_recency_days: int = Field(30, ge=1, description="The window of that recent popularity.")


class PublishSettings(BaseModel):
    retention: int = Field(5, ge=1, description="Snapshots kept besides the live one.")
    shard_count: int = Field(4, ge=1, description="Parquet parts per snapshot (users hashed into them).")
    multipart_mb: int = Field(
        64,
        ge=5,
        description="S3: a part file from this size up goes up as a multipart upload (parts of a quarter of it, "
        "several in flight, each retried alone); 1M users' lists are ~100 MB per part at 4 parts.",
    )
    redis_url: str | None = Field(
        None,
        description="Also load the live lists into Redis (redis://host:6379/0): versioned keys, then one "
        "pointer key flipped (nightrec.publish.redis_sink). None: no Redis.",
    )
    redis_prefix: str = Field("nightrec", description="Prefix of the Redis keys.")
    channels: dict[str, str] = Field(
        default_factory=dict,
        description="Extra lines of lists scored, validated and published each night besides the default "
        "one, for A/B variants: channel -> policy. A policy is 'challenger' (tonight's learned pair, promoted "
        "or not), 'popularity_<N>d', 'popularity_all' or 'ease' (nightrec.scoring.channels).",
    )

    @model_validator(mode="after")
    def _check_channels(self) -> PublishSettings:
        check_channels(self.channels)
        return self


CHALLENGER_SPEC = "challenger"
CHANNEL_SPECS = "'challenger', 'popularity_<N>d', 'popularity_all' or 'ease'"
POPULARITY_SPEC = re.compile(r"^popularity_(?:(\d+)d|all)$")


def check_spec(spec: str) -> None:
    """Refuse a channel policy that names nothing (nightrec.scoring.channels builds the policy)."""
    if spec not in (CHALLENGER_SPEC, "ease") and not POPULARITY_SPEC.match(spec):
        raise ValueError(f"unknown channel policy {spec!r}: one of {CHANNEL_SPECS}")


def check_channels(channels: dict[str, str]) -> None:
    """Refuse a channel map that could not be scored: bad names, the default channel, unknown policies."""
    for channel, spec in channels.items():
        if channel == DEFAULT_CHANNEL:
            raise ValueError(
                "publish.channels: 'default' always serves the live policy (the promotion gate's choice); "
                "name the extra channel something else"
            )
        try:
            channel_url("", channel)  # the name rule
        except ValueError as e:
            raise ValueError(f"publish.channels: {e}") from None
        try:
            check_spec(spec)
        except ValueError as e:
            raise ValueError(f"publish.channels.{channel}: {e}") from None


class ServeSettings(BaseModel):
    """`nightrec api`: the live lists over HTTP."""

    host: str = Field("127.0.0.1", description="Address to bind (loopback unless told otherwise).")
    port: int = Field(8765, ge=1, le=65535)
    poll_s: float = Field(5.0, gt=0, description="Seconds between reads of the live pointer.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes (each holds its own snapshots).")
    experiments: str | None = Field(
        None,
        description="A/B experiments file (YAML, see nightrec.serving.experiments); none: no experiment.",
    )
    exposure_log: str | None = Field(
        None, description="Folder of the exposure log. Default: <home>/exposures"
    )


class UiSettings(BaseModel):
    """Where people open what a night made: the links in Prefect artifacts, MLflow and the terminal."""

    mlflow_url: str | None = Field(
        None,
        description="MLflow UI base URL for links. Default: the tracking URI when it is http(s), else "
        "http://127.0.0.1:<mlflow_port>, where `nightrec serve` starts the MLflow UI.",
    )
    mlflow_port: int = Field(5000, ge=1, le=65535, description="Port `nightrec serve` gives the MLflow UI.")
    pages_url: str | None = Field(
        None,
        description="Base URL of the Data Docs and night reports. Default: http://127.0.0.1:<pages_port>, "
        "where `nightrec serve` starts `nightrec pages`.",
    )
    pages_port: int = Field(8766, ge=1, le=65535, description="Port of `nightrec pages`.")


class Settings(BaseSettings):
    """All locations and knobs of a nightrec deployment."""

    model_config = SettingsConfigDict(
        env_prefix="NIGHTREC_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    home: Path = Field(Path(".nightrec"), description="Root of the embedded default layout.")
    raw_data: str | None = Field(
        None, description="Raw input folder (events/, items/, users/). Default: <home>/demo-data"
    )
    lake: str | None = Field(None, description="Lake root (local path). Default: <home>/lake")
    store: str | None = Field(None, description="Object store: file://PATH or s3://bucket/prefix")
    mlflow_tracking_uri: str | None = None
    mlflow_artifact_root: str | None = Field(
        None,
        description="Where a new experiment keeps its artifacts. Default: <home>/mlartifacts for a local "
        "store; the server's own artifact store (proxied, e.g. S3) when mlflow_tracking_uri is http(s).",
    )
    mlflow_experiment: str = "nightrec"
    data_docs: str | None = None
    gx_root: str | None = None
    prefect_home: str | None = None
    event_types: list[str] = Field(default_factory=lambda: list(EVENT_TYPES))
    memory_gib: float | None = Field(
        None,
        ge=1.0,
        description="The memory a night may use, every process of it together (NIGHTREC_MEMORY_GIB). It lowers "
        "what would exceed its share: the Spark driver heap (2/5), the training samples "
        "(train.max_examples, 1/10), the scoring buffer (1/16) and user chunks. The driver JVM ends after the "
        "Spark stages, so its share returns for training and scoring. None = each setting as given.",
    )

    spark: SparkSettings = Field(default_factory=SparkSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    scoring: ScoringSettings = Field(default_factory=ScoringSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    gates: GateSettings = Field(default_factory=GateSettings)
    channel: str = Field(
        DEFAULT_CHANNEL,
        description="The line of lists this process writes and publishes (set per channel by the stages, "
        "from publish.channels; see for_channel). 'default' is the lake's recs table and the store's root.",
    )

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        home = self.home.resolve()
        self.home = home
        self.raw_data = self.raw_data or str(home / "demo-data")
        self.lake = self.lake or str(home / "lake")
        self.store = self.store or f"file://{home / 'store'}"
        self.mlflow_tracking_uri = self.mlflow_tracking_uri or f"sqlite:///{home / 'mlflow.db'}"
        if not self.mlflow_tracking_uri.startswith(("http://", "https://")):
            self.mlflow_artifact_root = self.mlflow_artifact_root or (home / "mlartifacts").as_uri()
        # else None: a tracking server keeps artifacts where it was told (--artifacts-destination s3://...),
        # and clients send them through it; a local folder here would be invisible to every other machine.
        self.data_docs = self.data_docs or str(home / "data_docs")
        self.gx_root = self.gx_root or str(home / "gx")
        self.prefect_home = self.prefect_home or str(home / "prefect")
        self.serve.exposure_log = self.serve.exposure_log or str(home / "exposures")
        tracking = self.mlflow_tracking_uri
        web = tracking if tracking.startswith(("http://", "https://")) else None
        self.ui.mlflow_url = (self.ui.mlflow_url or web or f"http://127.0.0.1:{self.ui.mlflow_port}").rstrip(
            "/"
        )
        self.ui.pages_url = (self.ui.pages_url or f"http://127.0.0.1:{self.ui.pages_port}").rstrip("/")
        return self

    @model_validator(mode="after")
    def _fit_memory(self) -> Settings:
        """With ``memory_gib``, the night's big consumers get shares of it (each only ever lowered)."""
        if self.memory_gib is None:
            return self
        mb = int(self.memory_gib * 1024)
        self.spark.driver_memory = f"{min(_megabytes(self.spark.driver_memory), max(512, mb * 2 // 5))}m"
        # As tensors an example is its history and ~8 more int64 fields; the model's and its twin's samples are
        # in memory together. A tenth of the budget for them.
        per_example = (self.features.history_len + 8) * 8 * 2
        fit = max(10_000, (mb << 20) // 10 // per_example)
        self.train.max_examples = min(self.train.max_examples or fit, fit)
        self.scoring.buffer_mb = min(self.scoring.buffer_mb, max(16, mb // 16))
        self.scoring.user_chunk_size = min(self.scoring.user_chunk_size, max(256, mb // 4))
        return self

    @model_validator(mode="after")
    def _spark_engine_needs_a_classic_session(self) -> Settings:
        if self.scoring.engine == "spark" and self.spark.remote:
            raise ValueError(
                "scoring.engine='spark' broadcasts the models through a SparkContext, which a Spark Connect "
                f"session (spark.remote={self.spark.remote!r}) does not have: score with scoring.engine='local', "
                "or give the precompute stage a Spark without spark.remote"
            )
        return self

    @property
    def lake_path(self) -> Path:
        return Path(self.lake)  # type: ignore[arg-type]

    @property
    def recs_table(self) -> str:
        """The lake table of this channel's lists: ``recs`` (the default), else ``channels/<channel>/recs``."""
        return "recs" if self.channel == DEFAULT_CHANNEL else f"channels/{self.channel}/recs"


def _megabytes(size: str) -> int:
    """A JVM memory size (``4g``, ``512m``, ``1024k``, bytes) in megabytes."""
    size = size.strip().lower()
    unit = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1 << 20}.get(size[-1:])
    return int(float(size[:-1]) * unit) if unit else int(size) >> 20


def channel_url(store_url: str, channel: str) -> str:
    """The URL of ``channel``'s store inside the store at ``store_url`` (the default channel is its root).

    Raises:
        ValueError: ``channel`` breaks the name rule (it is a path segment and a Redis key part).
    """
    if channel == DEFAULT_CHANNEL:
        return store_url
    if not re.match(CHANNEL_NAME, channel):
        raise ValueError(f"invalid channel name {channel!r}: letters, digits, '_', '.', '-' (64 at most)")
    return f"{store_url.rstrip('/')}/{CHANNELS_PREFIX}/{channel}"


def for_channel(settings: Settings, channel: str) -> Settings:
    """``settings`` for the lists of ``channel``: its lake table (``recs_table``), its store (the channel's
    prefix of the store, nightrec.publish.channels) and its Redis keys. Everything else is shared."""
    if channel == DEFAULT_CHANNEL:
        return settings
    s = settings.model_copy(deep=True)
    s.channel = channel
    s.store = channel_url(settings.store, channel)  # type: ignore[arg-type]
    s.publish.redis_prefix = f"{settings.publish.redis_prefix}:{channel}"
    return s


def with_run_params(
    settings: Settings,
    *,
    data: str | None = None,
    top_k: int | None = None,
    retrieval_epochs: int | None = None,
    ranking_epochs: int | None = None,
) -> Settings:
    """Per-run knobs (flow parameters) on top of env/defaults: code defaults < env/.env < flow parameters."""
    s = settings.model_copy(deep=True)
    if data:
        s.raw_data = str(Path(data).resolve())
    if top_k:
        s.scoring.top_k = top_k
    if retrieval_epochs:
        s.train.retrieval_epochs = retrieval_epochs
    if ranking_epochs:
        s.train.ranking_epochs = ranking_epochs
    return s
