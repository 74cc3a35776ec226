"""A/B assignment and channels: a 50/50 split within its binomial interval, stable across restarts and traffic
changes, each variant served from its own channel's live snapshot, every exposure logged and kept on shutdown."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest

from nightrec.io.store import LocalStore
from nightrec.publish.channels import DEFAULT_CHANNEL, open_channel
from nightrec.serving import exposures as exposure_log
from nightrec.serving.app import VARIANT_HEADER, create_app
from nightrec.serving.experiments import BUCKETS, Experiment, ExperimentFile, Variant, load_experiments
from nightrec.serving.follower import Follower
from tests.unit.serving import running
from tests.unit.serving.test_api import _publish

Z_999 = 3.2905  # two-sided 99.9% normal quantile


def _ab(traffic: float = 1.0, weights=(1.0, 1.0), **kw) -> Experiment:
    return Experiment(
        name="ranker-ab",
        traffic=traffic,
        variants=[
            Variant(name="control", channel=DEFAULT_CHANNEL, weight=weights[0]),
            Variant(name="challenger", channel="challenger", weight=weights[1]),
        ],
        **kw,
    )


def _split(experiment: Experiment, users: list[str]) -> dict[str, str | None]:
    return {u: (v.name if (v := experiment.assign(u)) else None) for u in users}


USERS = [f"user-{i}" for i in range(100_000)]


def test_a_50_50_split_of_100k_users_is_within_its_binomial_interval():
    got = Counter(_split(_ab(), USERS).values())
    n, half = len(USERS), len(USERS) / 2
    assert set(got) == {"control", "challenger"}
    assert abs(got["control"] - half) <= Z_999 * math.sqrt(n * 0.25), got


def test_assignment_is_the_same_in_another_process():
    code = (
        "from nightrec.serving.experiments import Experiment, Variant\n"
        "e = Experiment(name='ranker-ab', variants=[Variant(name='control'), "
        "Variant(name='challenger', channel='challenger')])\n"
        "print(''.join('1' if e.assign(f'user-{i}').name == 'challenger' else '0' for i in range(2000)))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    here = "".join("1" if _ab().assign(f"user-{i}").name == "challenger" else "0" for i in range(2000))
    assert there == here


def test_raising_traffic_only_adds_users_and_moving_weights_moves_only_the_users_who_must_switch():
    small, big = _split(_ab(traffic=0.2), USERS), _split(_ab(traffic=0.5), USERS)
    inside = [u for u, v in small.items() if v is not None]
    assert abs(len(inside) / len(USERS) - 0.2) < 0.01
    assert all(big[u] == small[u] for u in inside)  # nobody already in changed variant
    assert sum(v is not None for v in big.values()) > len(inside)
    even, skewed = _split(_ab(), USERS), _split(_ab(weights=(1.0, 3.0)), USERS)
    assert all(skewed[u] == "challenger" for u, v in even.items() if v == "challenger")
    moved = sum(even[u] != skewed[u] for u in USERS) / len(USERS)
    assert abs(moved - 0.25) < 0.01  # 50% -> 75% challenger: a quarter of all users switch, no one else


def test_an_experiment_serves_only_inside_its_window_and_traffic():
    e = _ab(start=datetime(2026, 12, 1, tzinfo=UTC), end=datetime(2026, 12, 8, tzinfo=UTC))
    assert e.active(datetime(2026, 12, 3, tzinfo=UTC)) and not e.active(datetime(2026, 12, 8, tzinfo=UTC))
    assert _ab(traffic=0.0).assign("anyone") is None
    assert BUCKETS == 10_000


def test_a_bad_experiment_file_names_the_problem(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text("experiments:\n  - name: x\n    traffic: 1.5\n    variants: [{name: a}]\n")
    with pytest.raises(ValueError, match=r"experiments.yaml.*traffic"):
        load_experiments(path)
    path.write_text("experiments:\n  - name: x\n    variants: [{name: a}, {name: a}]\n")
    with pytest.raises(ValueError, match="variant names repeat"):
        load_experiments(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_experiments(tmp_path / "missing.yaml")


def test_variants_are_served_from_their_channels_and_every_exposure_is_logged(tmp_path):
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "champion")
    challenger = open_channel(store.url, "challenger")
    _publish(challenger, tmp_path, "challenger", shift=9)
    followers = {c: Follower(open_channel(store.url, c)) for c in (DEFAULT_CHANNEL, "challenger")}
    for f in followers.values():
        f.poll()
    log = exposure_log.ExposureLog(tmp_path / "exposures")
    experiments = ExperimentFile(experiments=[_ab()])
    app = create_app(followers, experiments=experiments, exposures=log, poll=True)
    seen = {}
    with running(app) as client:
        for u in range(12):
            r = client.get(f"/v1/recs/u{u}")
            body = r.json()
            seen[f"u{u}"] = body["variant"]["variant"]
            assert r.headers[VARIANT_HEADER] == f"ranker-ab={body['variant']['variant']}"
            expected_run = "champion" if body["variant"]["channel"] == DEFAULT_CHANNEL else "challenger"
            assert body["snapshot"]["run_id"] == expected_run
            shift = 0 if expected_run == "champion" else 9
            assert body["items"][0]["item_id"] == f"i{(u + 1 + shift) % 50}"
    # The server's shutdown closed the log: every exposure is in a closed file.
    rows = exposure_log.read(tmp_path / "exposures")
    assert len(rows) == 12 and not list((tmp_path / "exposures").glob("*.open"))
    assert {r["user_id"]: r["variant"] for r in rows} == seen
    assert set(seen.values()) == {"control", "challenger"}
    assert all(len(r["items"]) == 3 and r["experiment"] == "ranker-ab" for r in rows)


def test_a_variant_whose_channel_has_nothing_live_gets_the_default_list_and_no_exposure(tmp_path):
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "champion")
    followers = {c: Follower(open_channel(store.url, c)) for c in (DEFAULT_CHANNEL, "challenger")}
    for f in followers.values():
        f.poll()
    log = exposure_log.ExposureLog(tmp_path / "exposures")
    app = create_app(followers, experiments=ExperimentFile(experiments=[_ab()]), exposures=log, poll=False)
    with running(app) as client:
        bodies = [client.get(f"/v1/recs/u{u}").json() for u in range(12)]
        ready = client.get("/readyz").json()
    log.close()
    variants = [b["variant"] for b in bodies]
    assert {v["variant"] for v in variants if v} == {"control"} and None in variants
    assert all(b["snapshot"]["run_id"] == "champion" for b in bodies)
    assert len(exposure_log.read(tmp_path / "exposures")) == sum(v is not None for v in variants)
    assert "nothing is live" in ready["channels"]["challenger"]["why"]


def test_the_exposure_log_rotates_and_a_reader_never_sees_an_open_file(tmp_path):
    log = exposure_log.ExposureLog(tmp_path, rotate_bytes=2000)
    for i in range(100):
        log.record(f"u{i}", "e", "a", DEFAULT_CHANNEL, "ds=x", ["i1", "i2"])
    log.close()
    files = sorted(tmp_path.glob("exposures-*.jsonl"))
    assert len(files) > 1 and not list(tmp_path.glob("*.open"))
    assert [r["user_id"] for r in exposure_log.read(tmp_path)] == [f"u{i}" for i in range(100)]
    assert orjson.loads(files[0].read_bytes().splitlines()[0])["items"] == ["i1", "i2"]


def test_100k_users_served_in_process_split_evenly(tmp_path):
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "champion")
    _publish(open_channel(store.url, "challenger"), tmp_path, "challenger", shift=9)
    followers = {c: Follower(open_channel(store.url, c)) for c in (DEFAULT_CHANNEL, "challenger")}
    for f in followers.values():
        f.poll()
    log = exposure_log.ExposureLog(tmp_path / "exposures")
    app = create_app(followers, experiments=ExperimentFile(experiments=[_ab()]), exposures=log, poll=False)

    async def serve_all() -> Counter:
        got: Counter = Counter()

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        for user in USERS:
            sent = []

            async def send(message, sent=sent):
                sent.append(message)

            scope = {
                "type": "http",
                "method": "GET",
                "path": f"/v1/recs/{user}",
                "query_string": b"",
                "headers": [],
            }
            await app(scope, receive, send)
            assert sent[0]["status"] == 200
            got[orjson.loads(sent[1]["body"])["variant"]["variant"]] += 1
        return got

    got = asyncio.run(serve_all())
    log.close()
    n = len(USERS)
    assert abs(got["control"] - n / 2) <= Z_999 * math.sqrt(n * 0.25), got
    logged = Counter(r["variant"] for r in exposure_log.read(tmp_path / "exposures"))
    assert logged == got
