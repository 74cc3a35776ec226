"""The Redis sink against a real redis-server (Debian's package, started here): versioned keys, one pointer
flip after a checked load, a failed load leaves the live version alone, old versions are retired."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nightrec.io import lake
from nightrec.io.store import LocalStore
from nightrec.publish import redis_sink, snapshot
from tests.unit.publish import write_recs

DS = date(2026, 11, 22)
redis = pytest.importorskip("redis")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.Redis.from_url(url).ping():
                break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def client(redis_url):
    c = redis.Redis.from_url(redis_url)
    c.flushdb()
    return c


def _snapshot(store, tmp_path, night: int):
    recs = write_recs(tmp_path / f"recs-{night}", n_users=9, k=3)
    pq.write_table(
        pa.table({"segment": ["", ""], "rank": [1, 2], "item_id": ["p1", "p2"], "score": [2.0, 1.0]}),
        recs / lake.COLDSTART,
    )
    ds = DS + timedelta(days=night)
    manifest = snapshot.write_snapshot(
        recs, store, ds=ds, run_id=f"run-{night}", shard_count=2, meta={"top_k": 3}
    )
    return manifest, snapshot.manifest_key(ds, f"run-{night}")


def test_a_loaded_snapshot_is_read_back_exactly_and_flips_live_in_one_step(redis_url, client, tmp_path):
    store = LocalStore(tmp_path / "store")
    first = _snapshot(store, tmp_path, 0)
    done = redis_sink.load(redis_url, store, *first)
    assert done.users == 9 and done.previous is None
    assert client.get("nightrec:default:live").decode() == redis_sink.version_of(first[0])
    # Every list as the snapshot holds it: user u<n> has items i<n+1>.. i<n+3> with scores 1/rank.
    for u in range(9):
        got = redis_sink.read(redis_url, f"u{u}")
        assert [r["item_id"] for r in got] == [f"i{(u + r) % 50}" for r in (1, 2, 3)]
        assert [r["rank"] for r in got] == [1, 2, 3] and got[1]["score"] == pytest.approx(0.5)
    assert redis_sink.read(redis_url, "nobody") == []
    version = redis_sink.version_of(first[0])
    cold = client.get(f"nightrec:default:{version}:coldstart:")
    assert [r["item_id"] for r in __import__("orjson").loads(cold)] == ["p1", "p2"]


def test_each_load_moves_live_and_previous_and_retires_older_versions(redis_url, client, tmp_path):
    store = LocalStore(tmp_path / "store")
    nights = [_snapshot(store, tmp_path, n) for n in range(3)]
    versions = [redis_sink.version_of(m) for m, _ in nights]
    for night in nights:
        redis_sink.load(redis_url, store, *night)
    assert client.get("nightrec:default:live").decode() == versions[2]
    assert client.get("nightrec:default:previous").decode() == versions[1]
    left = {k.decode().split(":")[2] for k in client.scan_iter("nightrec:default:*")}
    assert left == {"live", "previous", versions[1], versions[2]}  # the first version is gone
    again = redis_sink.load(redis_url, store, *nights[2])  # a retried load of what is live changes nothing
    assert again.previous == versions[1] and client.get("nightrec:default:live").decode() == versions[2]


def test_a_load_that_does_not_match_its_manifest_leaves_redis_live_as_it_was(redis_url, client, tmp_path):
    store = LocalStore(tmp_path / "store")
    good = _snapshot(store, tmp_path, 0)
    redis_sink.load(redis_url, store, *good)
    manifest, key = _snapshot(store, tmp_path, 1)
    lying = manifest.model_copy(update={"counts": {**manifest.counts, "users": 10}})
    with pytest.raises(redis_sink.RedisSinkFailed, match="loaded 9 users .* the manifest says 10"):
        redis_sink.load(redis_url, store, lying, key)
    assert client.get("nightrec:default:live").decode() == redis_sink.version_of(good[0])
    assert [r["item_id"] for r in redis_sink.read(redis_url, "u1")] == ["i2", "i3", "i4"]


def test_an_unreachable_redis_is_one_clear_error(tmp_path):
    store = LocalStore(tmp_path / "store")
    night = _snapshot(store, tmp_path, 0)
    with pytest.raises(
        redis_sink.RedisSinkFailed, match=r"Redis redis://127.0.0.1:9/0: .*live version was not changed"
    ):
        redis_sink.load("redis://127.0.0.1:9/0", store, *night)
