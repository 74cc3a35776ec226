"""The night's summary says what the gates noticed and why the run date is what it is."""

from __future__ import annotations

from nightrec import cli
from nightrec.settings import Settings
from schemas.results import GateSummary, NightResult


def test_summary_prints_the_gates_notes_and_the_chosen_date(tmp_path, capsys):
    result = NightResult(
        run_date="2026-11-23",
        validate_raw=GateSummary(
            gate="raw",
            success=True,
            notes=[
                "12 events outside [1970-01-01, 2026-11-23) (12 after the run date) will not reach features",
                "3 events of items unknown to the catalog will be dropped",
            ],
            warnings=["raw_schema: events has columns beyond the contract: extra"],
        ),
        validate_recs=GateSummary(gate="recs", success=True),
    )
    cli._print_summary(Settings(home=tmp_path), result, date_given=False)
    out = capsys.readouterr().out.replace("\n", " ")
    assert "run date 2026-11-23: the day after the newest event" in out and "--date" in out
    assert (
        "12 after the run date" in out and "3 events of items unknown" in out and "beyond the contract" in out
    )


def test_a_given_date_and_a_quiet_night_print_no_notes(tmp_path, capsys):
    quiet = NightResult(run_date="2026-11-23", validate_raw=GateSummary(gate="raw", success=True))
    cli._print_summary(Settings(home=tmp_path), quiet)
    out = capsys.readouterr().out
    assert "Notes:" not in out and "the day after the newest event" not in out


def test_the_summary_ends_with_where_the_night_report_is(tmp_path, capsys):
    night = NightResult(
        run_date="2026-11-23", validate_recs=GateSummary(gate="recs", success=True, report="/x/_REPORT.html")
    )
    cli._print_summary(Settings(home=tmp_path), night)
    out = capsys.readouterr().out
    assert "Night report: /x/_REPORT.html" in out and "nightrec report --open" in out
    cli._print_summary(Settings(home=tmp_path), NightResult(run_date="2026-11-23"))
    assert "Night report" not in capsys.readouterr().out
