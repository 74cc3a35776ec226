"""The operator commands on a published store: recs, status and rollback follow the pointer only."""

from __future__ import annotations

from datetime import date

import pytest
from typer.testing import CliRunner

from nightrec.cli import app
from nightrec.io.store import open_store
from nightrec.publish import pointer
from tests.unit.publish import publish, write_recs

DS = date(2026, 11, 22)


@pytest.fixture
def two_snapshots(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("NIGHTREC_HOME", str(home))
    store = open_store((home / "store").as_uri())
    keys = []
    for run_id, ds in (("run-1", DS), ("run-2", DS.replace(day=23))):
        manifest, key = publish(store, write_recs(tmp_path / run_id, n_users=6, k=3), ds, run_id)
        pointer.flip_live(store, manifest, key)
        keys.append(key)
    return store, keys


def test_rollback_moves_the_pointer_back_and_refuses_past_the_first(two_snapshots):
    store, (first, second) = two_snapshots
    runner = CliRunner()
    assert pointer.read_live(store)[0].manifest_key == second
    res = runner.invoke(app, ["rollback"])
    assert res.exit_code == 0, res.output
    assert "ds=2026-11-22" in res.output
    assert pointer.read_live(store)[0].manifest_key == first
    res = runner.invoke(app, ["rollback"])
    assert res.exit_code == 1 and "no previous snapshot" in res.output
    assert pointer.read_live(store)[0].manifest_key == first


def test_rollback_to_a_named_manifest_and_reader_follows(two_snapshots):
    store, (first, second) = two_snapshots
    runner = CliRunner()
    runner.invoke(app, ["rollback"])
    res = runner.invoke(app, ["rollback", "--to", second])
    assert res.exit_code == 0, res.output
    assert pointer.read_live(store)[0].manifest_key == second
    shown = runner.invoke(app, ["recs", "u1"])
    assert shown.exit_code == 0 and "u1" in shown.output


def test_status_tells_a_night_that_died_from_one_still_running(two_snapshots, tmp_path):
    import json
    import os
    import subprocess
    import sys

    store, (_, second) = two_snapshots
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    last = tmp_path / "home" / "last_run.json"
    runner = CliRunner()
    for pid, expected in ((proc.pid, "died"), (os.getpid(), "running")):
        last.write_text(json.dumps({"status": "running", "pid": pid, "started_at": "t0", "run_date": None}))
        res = runner.invoke(app, ["status"])
        assert res.exit_code == 0, res.output
        assert f"last run: {expected}" in res.output and "run date not chosen yet" in res.output, res.output
        assert second in res.output  # the live snapshot is shown either way


def test_a_channel_is_read_rolled_back_and_listed_on_its_own(two_snapshots, tmp_path):
    from nightrec.publish.channels import channel_names, open_channel

    store, (first, second) = two_snapshots
    challenger = open_channel(store.url, "challenger")
    for run_id, day in (("c-1", 22), ("c-2", 23)):
        manifest, key = publish(
            challenger, write_recs(tmp_path / run_id, n_users=4, k=3), DS.replace(day=day), run_id
        )
        pointer.flip_live(challenger, manifest, key)
    assert channel_names(store) == ["challenger"]
    runner = CliRunner()
    res = runner.invoke(app, ["status"])
    assert "channel challenger: ds=2026-11-23" in res.output, res.output
    assert runner.invoke(app, ["recs", "u5", "--channel", "challenger"]).exit_code == 1  # 4 users only there
    assert runner.invoke(app, ["recs", "u5"]).exit_code == 0
    res = runner.invoke(app, ["rollback", "--channel", "challenger"])
    assert res.exit_code == 0 and "of channel challenger: ds=2026-11-22" in res.output, res.output
    assert pointer.read_live(challenger)[0].run_id == "c-1"
    assert pointer.read_live(store)[0].manifest_key == second  # the default channel did not move
