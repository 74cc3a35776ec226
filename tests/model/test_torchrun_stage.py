"""A training stage with ``train.processes`` = 2 trains under torchrun (gloo on CPU) through the same door as one
process: one reuse rule, the same key and tags, and the next call of the night reuses what torchrun registered."""

from __future__ import annotations

import mlflow
import pytest

from nightrec import registry
from nightrec.training import launch, reuse, stages
from tests.conftest import make_settings
from tests.unit.features.conftest import CFG, RUN_DATE, clean_build, lake_copy  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.timeout(900)]


@pytest.fixture
def two_processes(clean_build, tmp_path):  # noqa: F811
    s = make_settings(tmp_path / "home", lake=lake_copy(clean_build.lake, tmp_path / "lake"))
    s.features = CFG
    s.train.processes = 2
    s.train.device = "cpu"
    return s


def test_processes_above_one_train_under_torchrun_and_the_night_reuses_the_version(two_processes, caplog):
    s = two_processes
    caplog.set_level("INFO", logger=launch.__name__)
    first = reuse.train_or_reuse(s, RUN_DATE, stages.RETRIEVAL, {"nightrec.flow_run_id": "run-1"})
    assert not first.reused
    run = mlflow.MlflowClient().get_run(first.run_id)
    tags = run.data.tags
    assert tags["nightrec.world_size"] == "2" and tags["nightrec.flow_run_id"] == "run-1"
    assert tags[reuse.REUSE_TAG] == reuse.key_for(s, RUN_DATE, stages.RETRIEVAL)
    assert registry.get_alias_version(stages.RETRIEVAL, "challenger") == first.version
    # The processes' epoch lines reached this process's log (and so the stage's run log).
    assert any("epoch" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records][
        -5:
    ]

    ranker = reuse.train_or_reuse(s, RUN_DATE, stages.RANKING, {})
    assert (
        not ranker.reused
        and mlflow.MlflowClient().get_run(ranker.run_id).data.tags["nightrec.world_size"] == "2"
    )

    # A re-run of the night: nothing changed, so neither model is trained again (no torchrun is launched).
    caplog.clear()
    again = reuse.train_or_reuse(s, RUN_DATE, stages.RETRIEVAL, {})
    assert again.reused and again.version == first.version
    assert not [r for r in caplog.records if r.name == launch.__name__]


def test_a_failing_process_is_one_error_with_its_last_lines(two_processes):
    s = two_processes
    s.lake = str(s.home / "no-lake")  # nothing to train on
    with pytest.raises(launch.LaunchError, match=r"torchrun training of nightrec-retrieval .* failed") as err:
        reuse.train_or_reuse(s, RUN_DATE, stages.RETRIEVAL, {})
    assert "no-lake" in str(err.value) or "Error" in str(err.value)
