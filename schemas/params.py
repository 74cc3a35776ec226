"""Typed flow parameters: the Prefect UI renders these as a form and the server validates them."""

from __future__ import annotations

from datetime import date
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from nightrec.settings import ScoringSettings, TrainSettings

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


def _default(model: type[BaseModel], field: str):
    return model.model_fields[field].default


def _form_schema(schema: dict) -> None:
    """The schema the Prefect UI renders as the run form and the server checks a run's parameters against.

    An optional field is offered as its value type, not as a value-or-null switch that starts on "None"; left
    empty it is absent and the deployment's setting applies. Its bounds stay on the field itself, so a value out
    of range is refused with the bound ("5000 is greater than the maximum of 1000"), not "not valid under any
    of the given schemas".
    """
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if options and {"type": "null"} in options:
            values = [o for o in options if o != {"type": "null"}]
            if len(values) == 1:
                del prop["anyOf"]
                prop.update(values[0])
        if prop.get("default", ...) is None:
            del prop["default"]


class NightlyParams(BaseModel):
    """Per-run knobs of the nightly pipeline (locations and secrets are settings, not parameters)."""

    model_config = ConfigDict(json_schema_extra=_form_schema)

    @model_serializer(mode="wrap")
    def _leave_out_unset(self, handler):
        # An optional knob not given is absent, not null: the form's default and the parameters the modular
        # chain passes on then match the form's schema, where a knob is its value type.
        return {k: v for k, v in handler(self).items() if v is not None}

    run_date: date | None = Field(
        None,
        description="Date the recommendations are for (events strictly before it are used). Leave empty for "
        "the day after the newest event.",
    )
    data: str | None = Field(
        None,
        description="Raw data folder with events/, items/, users/ (Parquet or CSV). Leave empty for the "
        "deployment's NIGHTREC_RAW_DATA (by default <home>/demo-data).",
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
        None,
        ge=1,
        le=1000,
        description="List length, 1 to 1000. Leave empty for the deployment's NIGHTREC_SCORING__TOP_K "
        f"({_default(ScoringSettings, 'top_k')} unless set).",
        examples=[_default(ScoringSettings, "top_k")],
    )
    retrieval_epochs: int | None = Field(
        None,
        ge=1,
        le=200,
        description="Two-tower epochs, 1 to 200. Leave empty for the deployment's "
        f"NIGHTREC_TRAIN__RETRIEVAL_EPOCHS ({_default(TrainSettings, 'retrieval_epochs')} unless set).",
        examples=[_default(TrainSettings, "retrieval_epochs")],
    )
    ranking_epochs: int | None = Field(
        None,
        ge=1,
        le=200,
        description="DeepFM epochs, 1 to 200. Leave empty for the deployment's NIGHTREC_TRAIN__RANKING_EPOCHS "
        f"({_default(TrainSettings, 'ranking_epochs')} unless set).",
        examples=[_default(TrainSettings, "ranking_epochs")],
    )
    stages: list[StageName] | None = Field(
        None,
        description="Run only these stages (e.g. precompute, validate_recs, publish). Leave empty for all.",
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
