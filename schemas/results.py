"""What each stage returns: typed results, declared once, read by flows, the CLI, artifacts and the next stage.

Stage entry points in ``nightrec/`` build these; tasks and flows pass them on unchanged; nobody reads a result
by string key. They are pydantic models, so Prefect stores and shows them as JSON, and ``last_run.json`` and
the night summary are their ``model_dump``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Registered model names, and the registry aliases: the models tonight's training made, and the ones the
# live policy was measured with.
RETRIEVAL, RANKING = "nightrec-retrieval", "nightrec-ranking"
CHALLENGER = "challenger"
CHAMPION = "champion"


class _Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class RuleFailure(_Result):
    """One broken (or, for a ``warn`` rule, bent) rule of a gate: what, where, how many, a few offending rows."""

    rule: str
    suite: str | None = None
    table: str | None = None
    column: str | list[str] | None = None
    count: int | None = None
    detail: str | dict | None = None
    file: str | None = None
    rows: list[Any] = Field(
        default_factory=list, description="up to 5 offending rows (their file where known)"
    )

    def line(self) -> str:
        """One line: ``[suite] rule column 'c' of table (n rows): detail``."""
        where = f"[{self.suite}] " if self.suite else ""
        col = f" column {self.column!r}" if self.column else ""
        tbl = f" of {self.table}" if self.table else ""
        cnt = f" ({self.count} rows)" if self.count is not None else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{where}{self.rule}{col}{tbl}{cnt}{detail}"


class GateSummary(_Result):
    """A gate that passed (a failed one raises ``GateFailed``)."""

    gate: str
    success: bool
    suites: dict[str, dict] = Field(default_factory=dict, description="suite -> success and GX statistics")
    warnings: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    data_docs: str | None = None
    report: str | None = Field(None, description="the night report (recs gate): lists against live, charts")
    mlflow_run_id: str | None = Field(None, description="the MLflow run the gate was logged to")
    channels: dict[str, GateSummary] = Field(
        default_factory=dict, description="recs gate: each extra channel's verdict (publish.channels)"
    )
    failed_channels: dict[str, str] = Field(
        default_factory=dict, description="channel -> why its lists were refused (it stays as it was live)"
    )


class FeaturesBuilt(_Result):
    """The night's feature tables: built, or reused because their inputs' fingerprint matched."""

    ds: str
    fingerprint: str
    skipped: bool
    rows: dict[str, int]
    cutoffs: dict[str, str]
    written: tuple[str, ...] = ()
    duplicates_dropped: int | None = None
    seconds: dict[str, float] = Field(
        default_factory=dict,
        description="wall time of each table written; a frame several tables share (the cleaned events, "
        "the interactions) is computed by the first one that needs it and counted there",
    )
    ranking_days: dict[str, int] = Field(
        default_factory=dict,
        description="the ranking examples' days: 'days' covered, 'built' tonight (the rest were kept from "
        "earlier nights, features.ranking_days)",
    )


class ModelTrained(_Result):
    """A registered model version (aliased `challenger`) and the run that trained it."""

    name: str
    version: str
    run_id: str
    serving_version: str | None = Field(None, description="its serving twin, where one was trained")
    metrics: dict[str, float] = Field(default_factory=dict)
    reused: bool = Field(
        False, description="an earlier version trained on the same inputs, settings and code"
    )


class ChosenPolicy(_Result):
    """The policy that makes tonight's lists."""

    name: str
    kind: str
    params: dict = Field(default_factory=dict)
    version: str | None = Field(None, description="its policy version in the registry")
    candidate: str = Field(description="the candidate it won as (challenger, champion, a baseline's name)")


class Promotion(_Result):
    """The gate's decision over every candidate policy on the held-out window."""

    promoted: bool
    reason: str
    metric: str
    policy: ChosenPolicy
    best_baseline: str | None = None
    lift_over_best_baseline: float | None = None
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict, description="candidate -> metrics")
    comparisons: dict[str, dict] = Field(default_factory=dict, description="candidate -> paired comparison")
    incumbent: str | None = None
    challenger: dict = Field(default_factory=dict, description="tonight's model versions")
    previous_champion: dict = Field(default_factory=dict)
    previous_policy: dict | None = None
    champion: dict = Field(default_factory=dict, description="model versions aliased champion after the gate")
    ease_validation: dict[str, float] | None = None
    rejected: list[str] = Field(default_factory=list, description="candidates whose lists were rolled back")
    run_id: str | None = Field(None, description="the MLflow evaluation run")


class ServingModel(_Result):
    version: str
    run_id: str
    evaluated_version: str


class ListsWritten(_Result):
    """Every user's list, written to the lake's ``recs`` partition by the scorer."""

    path: str
    users: int
    rows: int
    model_users: int
    fallback_users: int
    short_lists: int


class Precomputed(ListsWritten):
    """The night's lists in the lake, with their provenance."""

    policy: dict
    models: dict[str, ServingModel] = Field(default_factory=dict, description="model name -> version served")
    input_fingerprints: dict[str, str | None] = Field(default_factory=dict)
    skipped: bool = Field(False, description="the same features, policy and settings: the earlier lists kept")
    channel: str = Field("default", description="the line of lists (publish.channels) these are")
    channels: dict[str, Precomputed] = Field(
        default_factory=dict, description="each extra channel's lists, made by its own policy"
    )
    failed_channels: dict[str, str] = Field(default_factory=dict, description="channel -> why it has none")


class SnapshotDiff(_Result):
    """The new lists against the ones they replace, on a uniform sample of users (``publish.diff``)."""

    users_compared: int
    users_only_new: int
    users_only_old: int
    mean_overlap_at_k: float = Field(description="|new ∩ old| / K per user present in both, averaged")
    identical_lists: float = Field(description="share of common users whose list did not change at all")
    distinct_items_new: int
    distinct_items_old: int


class Publication(_Result):
    """A snapshot written to the store and (unless a newer one is live) made live."""

    store: str
    manifest_key: str
    pointer_key: str
    live: bool
    generation: int
    previous: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    deleted: list[str] = Field(default_factory=list, description="snapshots removed by retention")
    changes: SnapshotDiff | None = Field(None, description="what changed against the previous live snapshot")
    channels: dict[str, Publication] = Field(
        default_factory=dict, description="each extra channel's snapshot (its own live pointer)"
    )
    failed_channels: dict[str, str] = Field(
        default_factory=dict, description="channel -> why it was not published (its live lists untouched)"
    )


class NightResult(_Result):
    """One night: the run date, each stage's seconds and result (None where the stage was not selected)."""

    run_date: str
    seconds: dict[str, float] = Field(default_factory=dict)
    validate_raw: GateSummary | None = None
    build_features: FeaturesBuilt | None = None
    validate_features: GateSummary | None = None
    train_retrieval: ModelTrained | None = None
    train_ranking: ModelTrained | None = None
    evaluate_and_promote: Promotion | None = None
    precompute: Precomputed | None = None
    validate_recs: GateSummary | None = None
    publish: Publication | None = None


class AbVariant(_Result):
    """One variant of an A/B report: users, exposures, CTR with its 95% interval and its difference to control."""

    variant: str
    users: int
    exposures: int
    ctr: float
    ctr_low: float
    ctr_high: float
    ctr_diff: float | None = None
    ctr_diff_low: float | None = None
    ctr_diff_high: float | None = None
    ndcg: float


class AbReportWritten(_Result):
    """What `nightrec ab-report` measured and where it wrote the report."""

    experiment: str
    html: str
    png: str
    markdown: str
    srm_p: float
    variants: list[AbVariant]
