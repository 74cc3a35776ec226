"""Thresholds of the data gates (the ``gates`` section of ``Settings``; env ``NIGHTREC_GATES__...``)."""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, Field

Action = Literal["fail", "warn"]


class ShareRule(BaseModel):
    """A share of rows (0..1) that may not exceed ``max_share``."""

    max_share: float = Field(ge=0.0, le=1.0)
    action: Action = "fail"


class DriftRule(BaseModel):
    """Population stability index of one feature's distribution against the previous successful run."""

    threshold: float = Field(0.25, gt=0.0)
    action: Action = "warn"


class VolumeSettings(BaseModel):
    """Row counts against the median of the last ``history_runs`` successful runs."""

    history_runs: int = Field(7, ge=1)
    min_ratio: float = Field(0.5, ge=0.0, description="Below median x this: the low-volume rule fires.")
    max_ratio: float = Field(3.0, ge=1.0, description="Above median x this: the high-volume rule fires.")
    low_action: Action = "fail"
    high_action: Action = "warn"
    min_events_last_day: int = Field(1, ge=0, description="Floor used before any history exists.")


class ChangeRule(BaseModel):
    """How far one figure of tonight's lists may move, in its bad direction, from the median of the last
    successful nights: ``limit`` in the figure's own units (``absolute``), as a share of the median
    (``relative``), or as a share of the room left between the median and 1 (``headroom``, for a figure
    bounded by 1 such as the Gini: from 0.4 a rise of 0.3 is as alarming as one of 0.1 from 0.8)."""

    limit: float = Field(gt=0.0)
    scale: Literal["absolute", "relative", "headroom"] = "absolute"
    action: Action = "fail"


class HeadCoverage(BaseModel):
    """The catalog coverage floor of a catalog whose recent engagement is concentrated.

    A flat share of the catalog stops measuring the lists on a large catalog: at the L tier (100K items) the
    last week's engagement sat 80% on 1,393 items, and lists that followed it (1,124 distinct items over 1M
    users, 98% of them inside that head) fell under 2% of the catalog (bench/results/night_scale.md). The
    lists must instead reach ``min_coverage`` x the number of recommendable items that carry ``share`` of the
    last 7 days' engagement (``popularity_7d``): lists collapsed onto a few popular items still fail."""

    share: float = Field(0.8, gt=0.0, le=1.0, description="Share of recent engagement the head carries.")
    min_coverage: float = Field(
        0.5, ge=0.0, description="Distinct recommended items needed, per item of the head."
    )


class ChangeSettings(BaseModel):
    """The recs gate's rules on what changed (``evaluation.list_metrics``): the last line against lists that
    pass the offline metric but, say, give everyone the same popular items."""

    history_runs: int = Field(7, ge=1, description="Successful nights the median is taken over.")
    coverage: ChangeRule = Field(
        default_factory=lambda: ChangeRule(limit=0.5, scale="relative"),
        description="Catalog coverage may not drop below the median x (1 - limit).",
    )
    gini: ChangeRule = Field(
        default_factory=lambda: ChangeRule(limit=0.5, scale="headroom"),
        description="The Gini of the recommendation counts may not rise above median + limit x (1 - median).",
    )
    arp: ChangeRule = Field(
        default_factory=lambda: ChangeRule(limit=1.0, scale="relative"),
        description="The mean popularity of recommended items may not rise above the median x (1 + limit).",
    )
    fallback_share: ChangeRule = Field(
        default_factory=lambda: ChangeRule(limit=0.2),
        description="The share of users on the cold-start list may not rise by more than limit.",
    )
    replaced_share: ChangeRule = Field(
        default_factory=lambda: ChangeRule(limit=0.5, action="warn"),
        description="The share of users whose list changed almost entirely against the live one (Jaccard@K "
        "< 0.1) may not rise by more than limit. A new champion moves many lists: warn by default.",
    )


def _drift_defaults() -> dict[str, DriftRule]:
    return {
        "event_type_mix": DriftRule(threshold=0.2, action="fail"),
        "engaged_category": DriftRule(threshold=0.25, action="fail"),
        "user_activity": DriftRule(threshold=0.25, action="warn"),
        "item_popularity": DriftRule(threshold=0.25, action="warn"),
    }


class GateSettings(BaseModel):
    """What each gate tolerates. Shares are of the table's rows; actions are ``fail`` or ``warn``."""

    data_start: date = Field(
        date(1970, 1, 1),
        description="Events before this date are out of range (NIGHTREC_GATES__DATA_START). The Unix epoch: "
        "real logs go back decades (MovieLens starts in 1995), so the default only catches zero timestamps.",
    )
    out_of_range_ts: ShareRule = Field(default_factory=lambda: ShareRule(max_share=0.05))
    unknown_items: ShareRule = Field(default_factory=lambda: ShareRule(max_share=0.05))
    duplicates: ShareRule = Field(default_factory=lambda: ShareRule(max_share=0.05))
    quarantine: ShareRule = Field(
        default_factory=lambda: ShareRule(max_share=0.01),
        description="Malformed rows (unparsable CSV lines or fields) moved to lake/quarantine/.",
    )
    min_available_items: float = Field(0.01, ge=0.0, le=1.0, description="Share of the catalog.")
    max_event_value: float | None = Field(None, description="Upper bound of events.value (>= 0 always).")
    null_rate_jump: ShareRule = Field(
        default_factory=lambda: ShareRule(max_share=0.2),
        description="Increase of a nullable raw column's null rate over the previous successful run.",
    )
    volume: VolumeSettings = Field(default_factory=VolumeSettings)
    drift: dict[str, DriftRule] = Field(default_factory=_drift_defaults)
    new_users: ShareRule = Field(default_factory=lambda: ShareRule(max_share=0.5, action="warn"))
    new_items: ShareRule = Field(default_factory=lambda: ShareRule(max_share=0.5, action="warn"))
    max_user_features_null_rate: float = Field(0.5, ge=0.0, le=1.0, description="days_since_last.")
    min_examples_per_user: float = Field(1.0, ge=0.0, description="Retrieval train examples per user.")
    change: ChangeSettings = Field(default_factory=ChangeSettings)
    min_catalog_coverage: float = Field(
        0.02, ge=0.0, le=1.0, description="Distinct recommended items / recommendable items."
    )
    coverage_head: HeadCoverage = Field(
        default_factory=lambda: HeadCoverage(),
        description="Where recent engagement sits on a few items, the coverage floor is the lower of "
        "min_catalog_coverage and this (the engaged head of a large catalog).",
    )
    sample_rows: int = Field(5, ge=1, le=50, description="Offending rows shown per broken rule.")
