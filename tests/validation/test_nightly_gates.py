"""Bad raw data against a live system: one clean night publishes, then each planted fault must stop the next
night at the raw gate with a clear message, leaving the live pointer, the champions and the gate history as
they were (RELIABILITY.md scenarios 1, 2, 6 and 9 end to end)."""

from __future__ import annotations

import shutil
from datetime import date

import pyarrow as pa
import pytest

from nightrec import registry
from nightrec.data import synthetic
from nightrec.errors import GateFailed
from nightrec.evaluation.promotion import RANKING, RETRIEVAL
from nightrec.io.store import open_store
from nightrec.publish import pointer
from nightrec.scoring.policies import POLICY_MODEL
from nightrec.settings import Settings
from nightrec.validation import history
from tests.conftest import TEST_SPARK
from tests.validation.conftest import read_table, write_table

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RUN_DATE = date(2026, 11, 22)


def _champions(settings: Settings) -> dict:
    registry.connect(settings)
    return {n: registry.get_alias_version(n, "champion") for n in (RETRIEVAL, RANKING, POLICY_MODEL)}


@pytest.fixture(scope="module")
def live_night(prefect_harness, tmp_path_factory):
    """One clean nightly run (the only one of the module): something is live and champions exist."""
    from flows.nightly import nightly
    from schemas.params import NightlyParams

    root = tmp_path_factory.mktemp("gates-e2e")
    raw = root / "raw"
    # Big enough that two short trainings beat popularity (a champion exists), small enough for ~1 min.
    synthetic.generate(600, 200, 40, raw, seed=11, events_per_user=50.0)
    env = {
        "NIGHTREC_HOME": str(root / "home"),
        "NIGHTREC_SPARK__MASTER": TEST_SPARK.master,
        "NIGHTREC_SPARK__DRIVER_MEMORY": TEST_SPARK.driver_memory,
        "NIGHTREC_SPARK__SHUFFLE_PARTITIONS": str(TEST_SPARK.shuffle_partitions),
        "NIGHTREC_SPARK__MAX_RESULT_SIZE": TEST_SPARK.max_result_size,
        "NIGHTREC_SPARK__RELEASE_AFTER_STAGES": "false",
        "NIGHTREC_TRAIN__RETRIEVAL_EPOCHS": "4",
        "NIGHTREC_TRAIN__RANKING_EPOCHS": "2",
        "NIGHTREC_FEATURES__HOLDOUT_DAYS": "5",
        "NIGHTREC_FEATURES__VALID_DAYS": "5",
        "NIGHTREC_SCORING__TOP_K": "10",
        "NIGHTREC_SCORING__RERANK_WEIGHT": "0.0",
    }
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        nightly(NightlyParams(data=str(raw), run_date=RUN_DATE))
        settings = Settings()
        live = pointer.read_live(open_store(settings.store))
        assert live is not None
        yield {"raw": raw, "settings": settings, "live": live[0], "champions": _champions(settings)}


def test_clean_night_logs_each_gate_with_its_data_docs_to_mlflow(live_night):
    import mlflow
    from mlflow import MlflowClient

    settings = live_night["settings"]
    registry.connect(settings)
    runs = mlflow.search_runs(
        experiment_names=[settings.mlflow_experiment], filter_string="tags.`nightrec.kind` = 'data-gate'"
    )
    assert sorted(runs["tags.gate"]) == ["features", "raw", "recommendations"]
    assert set(runs["tags.success"]) == {"True"}
    # Each gate run links to its Data Docs where `nightrec pages` serves them, and nests under the night.
    for note in runs["tags.mlflow.note.content"]:
        assert f"{settings.ui.pages_url}/data-docs/ds=2026-11-22/index.html" in note
    night = registry.night_run("2026-11-22")
    assert set(runs["tags.mlflow.parentRunId"]) == {night}
    assert MlflowClient().get_run(night).info.run_name == "night-2026-11-22"
    assert (settings.home / "data_docs" / "index.html").read_text().count("ds=2026-11-22") == 1


def _truncate(raw):
    part = sorted((raw / "events").glob("*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:100])


def _drop_ts(raw):
    write_table(raw, "events", read_table(raw, "events").drop_columns(["ts"]))


def _empty_last_day(raw):
    ev = read_table(raw, "events").to_pandas()
    write_table(raw, "events", ev[ev["ts"].dt.strftime("%Y-%m-%d") != "2026-11-21"])


def _unknown_items(raw):
    items = read_table(raw, "items")
    write_table(raw, "items", items.slice(0, items.num_rows // 2))


def _all_unavailable(raw):
    items = read_table(raw, "items")
    i = items.schema.get_field_index("available")
    write_table(raw, "items", items.set_column(i, "available", pa.array([False] * items.num_rows)))


@pytest.mark.parametrize(
    ("plant", "expected"),
    [
        (_truncate, ["unreadable Parquet file", "events/part-00000.parquet"]),
        (_drop_ts, ["column 'ts'", "required column missing"]),
        (_empty_last_day, ["0 events for ds=2026-11-21, expected >= ", "events_last_day_low"]),
        (_unknown_items, ["unknown_item_share column 'item_id' of events", "file: file:"]),
        (_all_unavailable, ["available_item_share", "0 of 200 items are available"]),
    ],
    ids=["truncated", "schema-drift", "empty-day", "unknown-items", "all-unavailable"],
)
def test_bad_raw_data_stops_the_night_and_nothing_live_moves(
    live_night, tmp_path, monkeypatch, plant, expected
):
    from flows.nightly import nightly
    from schemas.params import NightlyParams

    settings: Settings = live_night["settings"]
    raw = tmp_path / "raw"
    shutil.copytree(live_night["raw"], raw)
    plant(raw)
    committed = history.load(settings.lake, date(2100, 1, 1), 30)
    assert committed, "the clean night committed its gate statistics"

    with pytest.raises(GateFailed) as e:
        nightly(NightlyParams(data=str(raw), run_date=RUN_DATE))
    msg = str(e.value)
    assert msg.startswith("gate 'raw' failed") and all(x in msg for x in expected), msg

    live, _ = pointer.read_live(open_store(settings.store))
    assert live == live_night["live"]
    assert _champions(settings) == live_night["champions"]
    assert history.load(settings.lake, date(2100, 1, 1), 30) == committed
