"""A whole night on data shaped like real logs, not like our demo: every shape must publish lists.

Ratings only (late-1990s dates, sparse weeks, one-day users), clicks only, purchases only, and the output of
``nightrec import-movielens`` for a folder in each of its three layouts, written from the ratings profile.
Each night goes through the CLI as a user runs it and must exit 0 with validated lists live, whichever policy
the promotion gate chose, and name that policy.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from nightrec.data import movielens, profiles
from nightrec.io.store import open_store
from nightrec.publish.reader import verify_live
from nightrec.settings import Settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TOP_K = 10


@pytest.fixture(scope="module")
def ratings_raw(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ratings") / "raw"
    profiles.generate("ratings", 400, 250, 90, out, seed=5, events_per_user=40.0)
    return out


def _movielens_folder(raw: Path, layout: str, dest: Path) -> Path:
    """The ratings profile written as a MovieLens folder of ``layout`` (integer ids, unix seconds)."""
    ev = pd.read_parquet(raw / "events")
    items = pd.read_parquet(raw / "items")
    users = pd.read_parquet(raw / "users")
    uid = {u: i + 1 for i, u in enumerate(sorted(users["user_id"]))}
    iid = {m: i + 1 for i, m in enumerate(sorted(items["item_id"]))}
    secs = (ev["ts"].astype("int64") // 10**6).astype(int)
    u, m, r = ev["user_id"].map(uid), ev["item_id"].map(iid), ev["value"]
    genre = items["category"].str.replace("cat_", "G", regex=False)
    dest.mkdir(parents=True)
    enc = "latin-1"
    if layout == "ml-100k":
        rows = [f"{a}\t{b}\t{int(c)}\t{d}" for a, b, c, d in zip(u, m, r, secs, strict=True)]
        (dest / "u.data").write_text("\n".join(rows) + "\n", encoding=enc)
        g = movielens.GENRES_100K
        flags = ["|".join("1" if i == (int(x[1:]) % len(g)) else "0" for i in range(len(g))) for x in genre]
        lines = [
            f"{iid[m]}|Title {iid[m]} (1996)|01-Jan-1996||http://x|{f}"
            for m, f in zip(items["item_id"], flags, strict=True)
        ]
        (dest / "u.item").write_text("\n".join(lines) + "\n", encoding=enc)
        people = [
            f"{uid[x]}|{20 + uid[x] % 40}|{'MF'[uid[x] % 2]}|other|0{uid[x]:04d}" for x in users["user_id"]
        ]
        (dest / "u.user").write_text("\n".join(people) + "\n", encoding=enc)
    elif layout == "ml-1m":
        rows = [f"{a}::{b}::{int(c)}::{d}" for a, b, c, d in zip(u, m, r, secs, strict=True)]
        (dest / "ratings.dat").write_text("\n".join(rows) + "\n", encoding=enc)
        lines = [
            f"{iid[m]}::Title {iid[m]} (1996)::{g}" for m, g in zip(items["item_id"], genre, strict=True)
        ]
        (dest / "movies.dat").write_text("\n".join(lines) + "\n", encoding=enc)
        people = [f"{uid[x]}::{'MF'[uid[x] % 2]}::25::{uid[x] % 21}::0{uid[x]:04d}" for x in users["user_id"]]
        (dest / "users.dat").write_text("\n".join(people) + "\n", encoding=enc)
    else:
        rows = ["userId,movieId,rating,timestamp"]
        rows += [f"{a},{b},{c},{d}" for a, b, c, d in zip(u, m, r, secs, strict=True)]
        (dest / "ratings.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        lines = ["movieId,title,genres"]
        lines += [f"{iid[m]},Title {iid[m]} (1996),{g}" for m, g in zip(items["item_id"], genre, strict=True)]
        (dest / "movies.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def _run_night(raw: Path) -> tuple[Settings, str]:
    from nightrec.cli import app

    res = CliRunner().invoke(app, ["run", "--data", str(raw), "--top-k", str(TOP_K)])
    assert res.exit_code == 0, res.output
    return Settings(), res.output


def _assert_published(settings: Settings, output: str, raw: Path) -> None:
    assert "Live recommendations" in output and "live policy: " in output
    store = open_store(settings.store)
    manifest = verify_live(store)
    assert manifest.policy.get("name") and f"live policy: {manifest.policy['name']}" in output
    recs = pd.concat(pd.read_parquet(io.BytesIO(store.get_bytes(p.key))) for p in manifest.parts)
    users = pd.read_parquet(raw / "users") if (raw / "users").exists() else None
    if users is not None:
        assert set(recs["user_id"]) == set(users["user_id"])
    assert not recs.duplicated(["user_id", "item_id"]).any()
    ev = pd.read_parquet(raw / "events")
    clash = recs.merge(ev[["user_id", "item_id"]].drop_duplicates(), on=["user_id", "item_id"])
    assert clash.empty, clash.head()  # nothing already rated, clicked or bought, fallback lists included
    assert recs.groupby("user_id").size().max() == TOP_K


@pytest.fixture
def night_env(nightrec_env, monkeypatch):
    monkeypatch.setenv("NIGHTREC_TRAIN__RETRIEVAL_EPOCHS", "2")
    monkeypatch.setenv("NIGHTREC_TRAIN__RANKING_EPOCHS", "1")
    monkeypatch.setenv("NIGHTREC_PROMOTION__BOOTSTRAP_SAMPLES", "500")
    return nightrec_env


@pytest.mark.parametrize("profile", ["clicks", "purchases"])
def test_a_single_event_type_log_runs_the_whole_night(prefect_harness, night_env, tmp_path, profile):
    raw = tmp_path / profile
    profiles.generate(profile, 400, 150, 40, raw, seed=3, events_per_user=50.0)
    settings, output = _run_night(raw)
    _assert_published(settings, output, raw)


def test_a_ratings_only_log_from_the_1990s_runs_and_says_which_policy_is_live(
    prefect_harness, night_env, ratings_raw
):
    settings, output = _run_night(ratings_raw)
    _assert_published(settings, output, ratings_raw)
    assert "1998-04-23" in output  # the run date follows the data, not the clock
    from nightrec.cli import app

    status = CliRunner().invoke(app, ["status"])
    assert status.exit_code == 0 and "live policy: " in status.output, status.output


@pytest.mark.parametrize("layout", ["ml-100k", "ml-1m", "ml-latest"])
def test_import_movielens_output_of_each_layout_runs_the_whole_night(
    prefect_harness, night_env, ratings_raw, tmp_path, layout
):
    from nightrec.cli import app

    src = _movielens_folder(ratings_raw, layout, tmp_path / layout)
    raw = tmp_path / "raw"
    res = CliRunner().invoke(app, ["import-movielens", str(src), str(raw)])
    assert res.exit_code == 0, res.output
    assert f"imported {layout}" in res.output and f"nightrec run --data {raw}" in res.output.replace("\n", "")
    assert movielens.detect_layout(src) == layout
    settings, output = _run_night(raw)
    _assert_published(settings, output, raw)
