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


def _setting_knob(what: str, model: type[BaseModel], section: str, field: str, most: int):
    """A run parameter that overrides one setting for this run; empty, the deployment's setting applies (its
    environment variable and code default are named in the form)."""
    default = model.model_fields[field].default
    env = f"NIGHTREC_{section.upper()}__{field.upper()}"
    return Field(
        None,
        ge=1,
        le=most,
        description=f"{what}, 1 to {most}. Leave empty for the deployment's {env} ({default} unless set).",
        examples=[default],
    )


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
    top_k: int | None = _setting_knob("List length", ScoringSettings, "scoring", "top_k", 1000)
    retrieval_epochs: int | None = _setting_knob(
        "Two-tower epochs", TrainSettings, "train", "retrieval_epochs", 200
    )
    ranking_epochs: int | None = _setting_knob("DeepFM epochs", TrainSettings, "train", "ranking_epochs", 200)
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
