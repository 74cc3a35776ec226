"""Typed flow parameters: the Prefect UI renders these as a form and the server validates them."""

from __future__ import annotations

from datetime import date
from typing import Literal, get_args

from pydantic import BaseModel, Field

StageName = Literal[
    "validate_raw",
    "build_features",
    "validate_features",
    "train_retrieval",
    "train_ranking",
    "evaluate_and_promote",
    "precompute",
    "validate_recs",
    "publish",
]
STAGES: tuple[str, ...] = get_args(StageName)  # DAG order


class NightlyParams(BaseModel):
    """Per-run knobs of the nightly pipeline (locations and secrets are settings, not parameters)."""

    run_date: date | None = Field(
        None,
        description="Date the recommendations are for (events strictly before it are used). "
        "Default: the day after the newest event.",
    )
    data: str | None = Field(
        None,
        description="Raw data folder with events/, items/, users/ (Parquet or CSV). Default: settings.raw_data.",
    )
    force: bool = Field(
        False,
        description="Rebuild features, retrain models and score users again even when their inputs did not change.",
    )
    backfill: bool = Field(
        False,
        description="A past date on a log that goes on after it: events on or after the run date are left out "
        "and counted, not a failure of the raw gate (the backfill flow sets it for every date).",
    )
    top_k: int | None = Field(
        None, ge=1, le=1000, description="List length. Default: settings.scoring.top_k."
    )
    retrieval_epochs: int | None = Field(
        None, ge=1, le=200, description="Two-tower epochs. Default: settings."
    )
    ranking_epochs: int | None = Field(None, ge=1, le=200, description="DeepFM epochs. Default: settings.")
    stages: list[StageName] | None = Field(
        None,
        description="Run only these stages (e.g. ['precompute', 'validate_recs', 'publish']). Default: all.",
    )


class AbReportParams(BaseModel):
    """What `ab-report` reads: one experiment's exposures and the engagement events that followed."""

    experiment: str = Field(min_length=1, description="The experiment's name in the experiments file.")
    events: str = Field(
        min_length=1,
        description="Engagement events after the exposures: a raw data folder (events/), an events folder or "
        "one file, in the raw events contract (Parquet, CSV or JSON Lines).",
    )
    exposures: str | None = Field(
        None, description="The exposure log folder. Default: settings.serve.exposure_log."
    )
    horizon_hours: float = Field(
        24.0,
        gt=0,
        le=24 * 30,
        description="An engagement counts for a list served at most this long before it.",
    )
