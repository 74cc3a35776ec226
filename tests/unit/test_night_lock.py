"""One night per run date: a live holder refuses a second run by name; a dead one's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nightrec.io import lake
from nightrec.ops import night_lock
from nightrec.ops.night_lock import NightAlreadyRunning

DS = date(2026, 11, 23)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _plant(root, **holder) -> None:
    path = night_lock.lock_path(root, DS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": "run-a", "started_at": "2026-11-23T01:00:00+00:00", **holder}))


def _staging(root) -> object:
    folder = lake.staging_path(root, "recs", DS)
    folder.mkdir(parents=True)
    return folder


def test_a_live_holder_refuses_a_second_run_of_the_date_by_name(tmp_path):
    with night_lock.night_lock(tmp_path, DS, "run-a"):
        with pytest.raises(NightAlreadyRunning) as err:
            night_lock.acquire(tmp_path, DS, "run-b")
        assert f"night {DS} is already running as run run-a" in str(err.value)
        # Another date is free.
        with night_lock.night_lock(tmp_path, date(2026, 11, 24), "run-c"):
            pass
    # Released: the date can be taken again.
    with night_lock.night_lock(tmp_path, DS, "run-b"):
        assert json.loads(night_lock.lock_path(tmp_path, DS).read_text())["run_id"] == "run-b"
    assert not night_lock.lock_path(tmp_path, DS).exists()


def test_a_dead_holders_lock_is_taken_over_and_its_staging_removed(tmp_path):
    _plant(tmp_path, pid=_dead_pid(), host=socket.gethostname())
    left = _staging(tmp_path)
    with night_lock.night_lock(tmp_path, DS, "run-b") as replaced:
        assert replaced["run_id"] == "run-a"
        assert not left.exists(), "the dead run's half-written partition"
    assert not night_lock.lock_path(tmp_path, DS).exists()


def test_a_holder_on_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path):
    _plant(tmp_path, pid=1, host="another-host")
    with pytest.raises(NightAlreadyRunning, match="run run-a"):
        night_lock.acquire(tmp_path, DS, "run-b")
    old = time.time() - night_lock.STALE_AFTER_S - 60
    os.utime(night_lock.lock_path(tmp_path, DS), (old, old))
    assert night_lock.acquire(tmp_path, DS, "run-b")["run_id"] == "run-a"


def test_release_leaves_no_staging_and_only_drops_its_own_lock(tmp_path):
    night_lock.acquire(tmp_path, DS, "run-a")
    left = _staging(tmp_path)
    night_lock.release(tmp_path, DS, "run-b")  # not the holder: the lock stays
    assert night_lock.lock_path(tmp_path, DS).exists() and not left.exists()
    night_lock.release(tmp_path, DS, "run-a")
    assert not night_lock.lock_path(tmp_path, DS).exists()


@pytest.mark.timeout(300)
def test_a_second_cli_run_of_a_running_date_says_so_in_a_few_lines(prefect_harness, nightrec_env, tiny_raw):
    from nightrec.cli import app
    from nightrec.settings import Settings

    settings = Settings()
    with night_lock.night_lock(settings.lake, DS, "run-a"):
        res = CliRunner().invoke(app, ["run", "--data", str(tiny_raw), "--date", DS.isoformat()])
    assert res.exit_code == 1, res.output
    assert f"night {DS} is already running as run run-a" in res.output
    assert "Traceback (most recent" not in res.output and len(res.output.strip().splitlines()) <= 15, (
        res.output
    )
    assert not list(Path(settings.lake).glob("*/_staging/*"))
