"""The A/B report recovers a planted CTR difference from 100k users' exposures and the clicks that followed,
flags a sample ratio mismatch, and runs as a Prefect flow with its artifact and an HTML page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from nightrec.serving.ab_report import analyse, read_engagements
from nightrec.serving.experiments import Experiment, Variant
from nightrec.settings import FeatureSettings

T0 = datetime(2026, 12, 7, 9, tzinfo=UTC)
RATES = {"control": 0.10, "challenger": 0.13}


def _planted(n_users: int = 100_000, seed: int = 0, drop_challenger: float = 0.0):
    """Exposures of a 50/50 experiment (the real assignment), and events where each list is clicked with its
    variant's rate within the hour, plus noise the report must ignore: clicks 2 days later, clicks on items
    that were not in the list, impressions."""
    rng = np.random.default_rng(seed)
    e = Experiment(
        name="rank-ab", variants=[Variant(name="control"), Variant(name="challenger", channel="c")]
    )
    users = [f"user-{i}" for i in range(n_users)]
    variant = [e.assign(u).name for u in users]
    keep = [not (v == "challenger" and rng.random() < drop_challenger) for v in variant]
    users = [u for u, k in zip(users, keep, strict=True) if k]
    variant = [v for v, k in zip(variant, keep, strict=True) if k]
    ts = [T0 + timedelta(seconds=int(s)) for s in rng.integers(0, 86_400, len(users))]
    items = [[f"i{j}" for j in rng.choice(1000, 10, replace=False)] for _ in users]
    exposures = pd.DataFrame(
        {
            "ts": ts,
            "user_id": users,
            "experiment": "rank-ab",
            "variant": variant,
            "channel": "x",
            "items": items,
        }
    )
    clicked = rng.random(len(users)) < np.array([RATES[v] for v in variant])
    rows = []
    for u, t, its, c in zip(users, ts, items, clicked, strict=True):
        if c:
            rows.append(
                (u, its[rng.integers(0, 10)], "click", t + timedelta(minutes=int(rng.integers(1, 60))))
            )
        rows.append((u, its[0], "click", t + timedelta(days=2)))  # too late to count
        rows.append((u, "not-shown", "purchase", t + timedelta(minutes=5)))  # not in the list
        rows.append((u, its[1], "impression", t + timedelta(minutes=5)))  # not an engagement
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "ts"])
    return exposures, events, clicked, variant


def test_the_report_recovers_a_planted_ctr_difference_over_100k_users(tmp_path):
    exposures, events, clicked, variant = _planted()
    path = tmp_path / "events.parquet"
    events.to_parquet(path)
    shares = {"control": 1.0, "challenger": 1.0}  # as the experiment file declares them, control first
    report = analyse("rank-ab", exposures, read_engagements(path, FeatureSettings()), shares=shares)
    by = {s.variant: s for s in report.variants}
    assert set(by) == {"control", "challenger"} and not report.srm
    for name, s in by.items():
        truth = float(np.mean([c for c, v in zip(clicked, variant, strict=True) if v == name]))
        assert s.ctr.mean == pytest.approx(truth)  # exactly the planted clicks, none of the noise
        assert s.ctr.low < RATES[name] < s.ctr.high
    diff = by["challenger"].ctr_diff
    assert diff.low < 0.03 < diff.high and diff.low > 0  # the planted +3 points, and significant
    assert by["challenger"].ndcg.mean > by["control"].ndcg.mean > 0
    assert by["control"].users + by["challenger"].users == 100_000


def test_a_sample_ratio_mismatch_is_flagged():
    exposures, events, *_ = _planted(n_users=20_000, drop_challenger=0.1)
    report = analyse(
        "rank-ab", exposures, events.loc[events["event_type"] == "click", ["user_id", "item_id", "ts"]]
    )
    assert report.srm and report.srm_p < 0.001


def test_ab_report_runs_as_a_flow_with_its_artifact_and_page(tmp_path, monkeypatch, prefect_harness):
    from prefect.client.orchestration import get_client

    from flows.ab_report import ab_report
    from nightrec.serving import exposures as exposure_log
    from schemas.params import AbReportParams

    monkeypatch.setenv("NIGHTREC_HOME", str(tmp_path / "home"))
    exposures, events, *_ = _planted(n_users=3000)
    log = exposure_log.ExposureLog(tmp_path / "exposures")
    for r in exposures.itertuples():
        log.record(r.user_id, r.experiment, r.variant, r.channel, "ds=x", r.items)
    log.close()
    (tmp_path / "raw" / "events").mkdir(parents=True)
    events.to_csv(tmp_path / "raw" / "events" / "part-0.csv", index=False)
    # The log's own timestamps are "now": shift the planted events onto them per user.
    logged = pd.DataFrame(exposure_log.read(tmp_path / "exposures"))
    offset = pd.to_datetime(logged["ts"], utc=True).to_numpy() - exposures["ts"].to_numpy()
    shifted = events.merge(pd.DataFrame({"user_id": logged["user_id"], "offset": offset}), on="user_id")
    shifted["ts"] = shifted["ts"] + shifted["offset"]
    shifted.drop(columns="offset").to_csv(tmp_path / "raw" / "events" / "part-0.csv", index=False)

    out = ab_report(
        AbReportParams(
            experiment="rank-ab", events=str(tmp_path / "raw"), exposures=str(tmp_path / "exposures")
        )
    )
    assert {v.variant for v in out.variants} == {"control", "challenger"}
    assert out.variants[1].ctr_diff is not None
    page = (tmp_path / "home" / "ab" / "rank-ab" / "report.html").read_text()
    assert "data:image/png;base64," in page and "rank-ab" in page and out.png.endswith("chart.png")
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts(limit=50)
        keys = {a.key for a in artifact}
    assert "ab-rank-ab" in keys


def test_the_cli_says_what_is_missing_in_one_line(tmp_path, monkeypatch, prefect_harness):
    from typer.testing import CliRunner

    from nightrec.cli import app

    monkeypatch.setenv("NIGHTREC_HOME", str(tmp_path / "home"))
    (tmp_path / "exposures").mkdir()
    res = CliRunner().invoke(
        app, ["ab-report", "rank-ab", "--events", str(tmp_path), "--exposures", str(tmp_path / "exposures")]
    )
    assert res.exit_code == 1
    assert "ab-report failed: no exposures in" in res.output and "Traceback (most recent" not in res.output
    log = res.output.split("Tracebacks and library logs: ")[1].strip()
    assert "Traceback (most recent call last)" in open(log).read()
