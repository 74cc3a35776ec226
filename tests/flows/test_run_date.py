"""A night's date is chosen once: the Spark stages read it off the raw events and record it on their flow run
(which the modular chain's trigger passes on); every later stage reads it off the lake, without Spark."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from nightrec.errors import StageInputMissing
from nightrec.features.build import OUTPUTS
from nightrec.features.run_date import from_lake
from nightrec.io import lake
from schemas.params import NightlyParams


def _complete(root, ds: date, tables=OUTPUTS) -> None:
    for t in tables:
        path = lake.partition_path(root, t.name, ds)
        path.mkdir(parents=True)
        lake.write_marker(path, "fp", table=t.name, rows=1)


def test_the_lake_dates_a_stage_by_its_newest_night_with_every_feature_table_complete(tmp_path):
    root = tmp_path / "lake"
    _complete(root, date(2024, 3, 1))
    _complete(root, date(2024, 3, 3))
    _complete(root, date(2024, 3, 5), OUTPUTS[:-1])  # a build killed before its last table
    assert from_lake(root) == date(2024, 3, 3)


def test_a_lake_without_a_complete_night_says_what_to_run(tmp_path):
    root = tmp_path / "lake"
    _complete(root, date(2024, 3, 5), OUTPUTS[:2])
    with pytest.raises(StageInputMissing, match="run build-features first, or pass run_date"):
        from_lake(root)


def test_the_first_stage_records_the_date_it_chose_on_its_flow_run(prefect_harness, nightrec_env, tiny_raw):
    from prefect.client.orchestration import get_client

    from flows.validate_raw import validate_raw

    newest = pd.read_parquet(tiny_raw / "events", columns=["ts"])["ts"].max()
    expected = newest.date() + timedelta(days=1)
    state = validate_raw(NightlyParams(data=str(tiny_raw)), return_state=True)
    assert state.is_completed(), state
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    # What the next stage's trigger reads: `{{ flow_run.parameters['params'] }}`.
    assert run.parameters["params"]["run_date"] == expected.isoformat()
    assert run.parameters["params"]["data"] == str(tiny_raw)
    assert run.name == f"validate-raw-{expected}"
