"""A failed night through the CLI: one message on the terminal (what, where, what to do), tracebacks in a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nightrec.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_failed_gate_prints_one_message_and_the_log_holds_the_tracebacks(
    prefect_harness, nightrec_env, tiny_raw, monkeypatch
):
    from nightrec.cli import app

    monkeypatch.setenv("NIGHTREC_GATES__DATA_START", "2030-01-01")  # every event is now out of range
    res = CliRunner().invoke(app, ["run", "--data", str(tiny_raw), "--stages", "validate_raw"])
    assert res.exit_code == 1, res.output
    out = res.output
    assert "Traceback (most recent call last)" not in out and 'File "' not in out
    assert out.count("nightly failed:") == 1
    assert "out_of_range_ts_share" in out and "NIGHTREC_GATES__DATA_START" in out  # what, and what to do
    assert "The live recommendations were not changed." in out
    assert len(out.strip().splitlines()) <= 15, out  # the first screen: progress, one message, the log path
    log = Path(out.split("Tracebacks and library logs:")[1].split()[0])
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "GateFailed" in text
    last = json.loads((Settings().home / "last_run.json").read_text())
    assert last["status"] == "failed" and last["log"] == str(log)


def test_a_contract_violation_without_a_date_goes_through_the_raw_gate(
    prefect_harness, nightrec_env, tiny_raw, tmp_path
):
    import shutil

    import pyarrow.parquet as pq

    from nightrec.cli import app

    raw = tmp_path / "raw"
    shutil.copytree(tiny_raw, raw)
    (part,) = sorted((raw / "events").glob("*.parquet"))
    pq.write_table(pq.read_table(part).drop_columns(["event_type"]), part)  # a required column is gone
    res = CliRunner().invoke(app, ["run", "--data", str(raw)])  # no --date: it cannot be read from the events
    assert res.exit_code == 1, res.output
    out = res.output
    assert "required column missing" in out and "event_type" in out and str(part) in out.replace("\n", "")
    assert "Data Docs" in out, out  # reported by the raw gate, with its report
    assert "Traceback (most recent call last)" not in out and len(out.strip().splitlines()) <= 15, out
