"""A night with extra channels (publish.channels): each is scored by its own policy, gated, and published under
its own live pointer; one channel's failure leaves the others and the default alone; the API serves each
variant from its channel's lists."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from nightrec import registry
from nightrec.faults import FAULT_ENV
from nightrec.io.store import open_store
from nightrec.publish import pointer
from nightrec.publish.channels import DEFAULT_CHANNEL, channel_names, open_channel
from nightrec.publish.reader import verify_live
from nightrec.serving.app import create_app
from nightrec.serving.experiments import Experiment, ExperimentFile, Variant
from nightrec.serving.follower import Follower
from nightrec.settings import Settings
from tests.unit.serving import running

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOP_K = 10
RUN_DATE = "2026-11-22"
ROOT = Path(__file__).resolve().parents[2]
# Spark's log4j lines (26/12/07 01:01:20 WARN ...), Python logging of MLflow and Prefect, MLflow's prints.
LIBRARY_LINE = re.compile(
    r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (WARN|INFO|ERROR)|log4j|\b(INFO|WARNING)\b.*\b(mlflow|prefect)\b"
    r"|Successfully registered model|Created version '"
)
CHANNELS = {"popular": "popularity_7d", "ranker": "challenger", "broken": "popularity_all"}


@pytest.fixture
def channels_env(nightrec_env, monkeypatch):
    monkeypatch.setenv("NIGHTREC_SCORING__TOP_K", str(TOP_K))
    monkeypatch.setenv("NIGHTREC_PUBLISH__CHANNELS", json.dumps(CHANNELS))
    # The 'broken' channel's precompute fails: the night must still publish the default and the others.
    monkeypatch.setenv(FAULT_ENV, "precompute.channel:raise:broken")
    return nightrec_env


def _lists(store) -> pd.DataFrame:
    manifest = verify_live(store)
    return pd.concat(pd.read_parquet(io.BytesIO(store.get_bytes(p.key))) for p in manifest.parts)


def test_channels_are_scored_by_their_policies_and_published_under_their_own_pointers(
    prefect_harness, channels_env, e2e_raw
):
    settings = Settings()
    # As a user runs it, in a terminal of its own: what it prints is the whole of what they read.
    res = subprocess.run(
        [sys.executable, "-m", "nightrec.cli", "run", "--data", str(e2e_raw), "--date", RUN_DATE],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    last = json.loads((settings.home / "last_run.json").read_text())
    assert last["status"] == "completed"
    # One line per channel in the summary; the broken one says why and that its live lists are unchanged.
    assert "channel popular (popularity_7d): live at" in out
    assert "channel ranker (learned): live at" in out
    assert "channel broken" in out and "fault injected at precompute.channel" in out
    # Progress per training epoch; no line from Spark, MLflow or Prefect (they write to the night's log).
    assert "two-tower retrieval epoch 1/" in out and "DeepFM ranking epoch 1/" in out, out
    chatter = [line for line in out.splitlines() if LIBRARY_LINE.search(line)]
    assert not chatter, chatter
    assert set(last["precompute"]["failed_channels"]) == {"broken"}
    assert set(last["validate_recs"]["channels"]) == {"popular", "ranker"}
    assert set(last["publish"]["channels"]) == {"popular", "ranker"}

    root = open_store(settings.store)
    assert channel_names(root) == ["popular", "ranker"]  # nothing of 'broken' was written
    default = _lists(root)
    stores = {c: open_channel(settings.store, c) for c in ("popular", "ranker")}
    lists = {c: _lists(s) for c, s in stores.items()}
    # The default layout is untouched: its pointer is at the root, its manifest names the live policy.
    live, _ = pointer.read_live(root)
    assert live.manifest_key == last["publish"]["manifest_key"] and live.manifest_key.startswith("recs/")
    # Each channel's manifest names the policy it was scored by; the ranker's models are tonight's challengers.
    registry.connect(settings)
    popular = verify_live(stores["popular"])
    ranker = verify_live(stores["ranker"])
    assert popular.policy["name"] == "popularity_7d" and popular.models == {}
    assert ranker.policy["kind"] == "learned"
    challenger_ranking = registry.get_alias_version("nightrec-ranking", "challenger")
    assert ranker.models["nightrec-ranking"]["version"] == str(challenger_ranking)
    # Every channel holds every user with K items and passed the same gate as the default.
    for name, frame in {DEFAULT_CHANNEL: default, **lists}.items():
        assert set(frame["user_id"]) == set(default["user_id"]), name
        assert (frame.groupby("user_id").size() == TOP_K).all(), name
        assert not frame.duplicated(["user_id", "item_id"]).any(), name
    # Popularity gives the active users far more alike lists than the learned pair does.
    model_rows = {c: f[f["source"] == "model"] for c, f in lists.items()}
    distinct = {c: f.groupby("user_id")["item_id"].apply(tuple).nunique() for c, f in model_rows.items()}
    assert distinct["popular"] < distinct["ranker"]

    # The API serves each variant from its channel's lists, and says so.
    experiments = ExperimentFile(
        experiments=[
            Experiment(
                name="ab",
                variants=[
                    Variant(name="control", channel=DEFAULT_CHANNEL),
                    Variant(name="b", channel="ranker"),
                ],
            )
        ]
    )
    followers = {c: Follower(open_channel(settings.store, c)) for c in (DEFAULT_CHANNEL, "ranker")}
    for f in followers.values():
        f.poll()
    expected = {DEFAULT_CHANNEL: default, "ranker": lists["ranker"]}
    users = sorted(default.loc[default["source"] == "model", "user_id"].unique())[:30]
    served = set()
    with running(create_app(followers, experiments=experiments, poll=False)) as client:
        for user in users:
            body = client.get(f"/v1/recs/{user}").json()
            channel = body["variant"]["channel"]
            served.add(channel)
            want = expected[channel].query("user_id == @user").sort_values("rank")["item_id"].tolist()
            assert [i["item_id"] for i in body["items"]] == want, (user, channel)
    assert served == {DEFAULT_CHANNEL, "ranker"}
