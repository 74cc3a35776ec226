"""Publish protocol against a real HTTP S3 endpoint (moto's threaded server) and the local folder store.

Faults are injected with botocore event hooks on the real client: ``before-send`` returns a synthetic 503
without reaching the server, ``after-call`` raises after the server applied a write (an ambiguous success).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from datetime import date, timedelta

import pytest
from botocore.awsrequest import AWSResponse
from moto.server import ThreadedMotoServer

from nightrec.io.store import LocalStore, StoreError, open_store, probe_conditional_writes
from nightrec.publish import pointer, reader, snapshot
from schemas.manifest import LivePointer
from tests.unit.publish import publish, write_recs
from tests.unit.publish.seaweedfs import seaweedfs_server

DS = date(2026, 11, 22)


@pytest.fixture(scope="module")
def moto_endpoint():
    access_log = logging.getLogger("werkzeug")
    level = access_log.level
    access_log.setLevel(logging.WARNING)  # one line per request drowns the failure output
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    access_log.setLevel(level)


@pytest.fixture(scope="module")
def seaweedfs_endpoint(tmp_path_factory):
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        yield endpoint


def _bucket_store(endpoint: str, monkeypatch, tmp_path, *, shared_bucket: str | None = None):
    """A fresh bucket (or a fresh prefix in ``shared_bucket``) per test; boto3 finds the endpoint and dummy
    credentials in the environment."""
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    if shared_bucket:
        store = open_store(f"s3://{shared_bucket}/t-{uuid.uuid4().hex[:12]}/recs-store", max_attempts=3)
        try:
            store.client.create_bucket(Bucket=shared_bucket)
        except store.client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return store
    bucket = f"nightrec-{uuid.uuid4().hex[:12]}"
    store = open_store(f"s3://{bucket}/team/recs-store", max_attempts=3)
    store.client.create_bucket(Bucket=bucket)
    return store


@pytest.fixture
def s3_store(moto_endpoint, monkeypatch, tmp_path):
    return _bucket_store(moto_endpoint, monkeypatch, tmp_path)


@pytest.fixture(
    params=["local", "s3", pytest.param("seaweedfs", marks=pytest.mark.slow)],
)
def store(request, tmp_path, monkeypatch):
    """The protocol tests run on the local folder, moto's S3 and a real SeaweedFS server."""
    if request.param == "local":
        return open_store((tmp_path / "store").as_uri())
    if request.param == "seaweedfs":
        # SeaweedFS grows volumes per bucket (collection): one bucket, a prefix per test.
        endpoint = request.getfixturevalue("seaweedfs_endpoint")
        return _bucket_store(endpoint, monkeypatch, tmp_path, shared_bucket="nightrec-tests")
    return request.getfixturevalue("s3_store")


@pytest.fixture(autouse=True)
def live_invariant(request):
    """After every scenario: the pointer (if any) leads to a complete manifest whose parts exist with matching
    checksums and row counts (RELIABILITY.md's invariant), unless the test broke the live snapshot on purpose."""
    # Resolved here, before the test, so the stores outlive this fixture's teardown.
    stores = [request.getfixturevalue(n) for n in ("store", "s3_store") if n in request.fixturenames]
    yield
    if request.node.get_closest_marker("breaks_live"):
        return
    for store in stores:
        if pointer.read_live(store) is not None:
            reader.verify_live(store)


@pytest.fixture
def recs_dir(tmp_path):
    return write_recs(tmp_path / "recs", n_users=20, k=3)


def _503(request, **_):
    body = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
    return AWSResponse(request.url, 503, {}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


def _key_of(request) -> str:
    return request.url.split("?")[0].rsplit("/", 1)[-1]


# ------------------------------------------------------------------ both stores


def test_publish_flip_and_read_round_trip(store, recs_dir):
    manifest, key = publish(store, recs_dir, DS, "run-a")
    live = pointer.flip_live(store, manifest, key)
    assert (live.ds, live.generation, live.run_id, live.previous) == (DS, 1, "run-a", None)
    assert reader.verify_live(store) == manifest
    rows = reader.LiveRecs(store).recs("u7")
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["item_id"] for r in rows] == ["i8", "i9", "i10"]
    assert {r["source"] for r in rows} == {"model"}
    assert reader.LiveRecs(store).recs("u0")[0]["source"] == "fallback"
    assert reader.LiveRecs(store).recs("nobody") == []


def test_two_publishers_same_generation_exactly_one_wins(store, recs_dir):
    # Both runs listed the date before either wrote its manifest, so both hold generation 1.
    m_a, key_a = publish(store, recs_dir, DS, "run-a")
    hidden = store.get_bytes(key_a)
    store.delete([key_a])
    m_b, key_b = publish(store, recs_dir, DS, "run-b")
    store.put_bytes(key_a, hidden)
    assert m_a.generation == m_b.generation == 1

    barrier, results = threading.Barrier(2), {}

    def run(name, manifest, key):
        barrier.wait()
        try:
            results[name] = pointer.flip_live(store, manifest, key)
        except pointer.Superseded as e:
            results[name] = e

    threads = [threading.Thread(target=run, args=a) for a in (("a", m_a, key_a), ("b", m_b, key_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [n for n, r in results.items() if isinstance(r, LivePointer)]
    losers = [r for r in results.values() if isinstance(r, pointer.Superseded)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].by_run_id == f"run-{winners[0]}"
    assert f"superseded by run run-{winners[0]}" in str(losers[0])
    assert reader.verify_live(store).run_id == f"run-{winners[0]}"


def test_pointer_is_forward_only_unless_allow_older(store, recs_dir):
    m_new, k_new = publish(store, recs_dir, DS, "run-new")
    pointer.flip_live(store, m_new, k_new)
    m_old, k_old = publish(store, recs_dir, DS - timedelta(days=3), "run-backfill")
    before = store.get_bytes(pointer.POINTER_KEY)
    with pytest.raises(pointer.PointerConflict, match="allow_older"):
        pointer.flip_live(store, m_old, k_old)
    assert store.get_bytes(pointer.POINTER_KEY) == before
    assert pointer.flip_live(store, m_old, k_old, allow_older=True).manifest_key == k_old


def test_rerun_gets_next_generation_and_moves_forward(store, recs_dir):
    m1, k1 = publish(store, recs_dir, DS, "run-1")
    pointer.flip_live(store, m1, k1)
    m2, k2 = publish(store, recs_dir, DS, "run-2")
    assert m2.generation == 2 and [p.sha256 for p in m2.parts] == [p.sha256 for p in m1.parts]
    live = pointer.flip_live(store, m2, k2)
    assert (live.generation, live.previous) == (2, k1)
    assert pointer.flip_live(store, m2, k2) == live  # a retried flip is a no-op


def test_rollback_is_a_cas_to_the_previous_snapshot(store, recs_dir):
    keys = []
    for i, ds in enumerate([DS - timedelta(days=2), DS - timedelta(days=1), DS]):
        m, k = publish(store, recs_dir, ds, f"run-{i}")
        pointer.flip_live(store, m, k)
        keys.append(k)
    first = pointer.rollback(store)
    assert (first.manifest_key, first.previous) == (keys[1], keys[0])
    assert reader.verify_live(store).run_id == "run-1"
    assert pointer.rollback(store).manifest_key == keys[0]
    with pytest.raises(pointer.PointerConflict, match="no previous"):
        pointer.rollback(store)
    assert pointer.rollback(store, keys[2]).manifest_key == keys[2]


def test_retention_keeps_live_and_newest_n_and_reaps_orphans(store, recs_dir):
    keys = []
    for i in range(5):
        m, k = publish(store, recs_dir, DS + timedelta(days=i), f"run-{i}")
        keys.append(k)
    pointer.flip_live(store, m, k)
    # A failed publish: parts written, no manifest; older than the newest manifest once it is rewritten.
    orphan = snapshot.part_key(DS - timedelta(days=9), "run-orphan", 0)
    store.put_bytes(orphan, b"half a snapshot")
    store.put_bytes(keys[4], store.get_bytes(keys[4]))
    deleted = pointer.apply_retention(store, keep=2, orphan_grace=timedelta(0))
    orphan_run = snapshot.run_prefix(DS - timedelta(days=9), "run-orphan")
    expected = [snapshot.run_prefix(DS + timedelta(days=i), f"run-{i}") for i in (0, 1)] + [orphan_run]
    assert sorted(deleted) == sorted(expected)
    assert snapshot.list_manifests(store) == keys[2:]
    assert store.list(orphan_run) == []
    reader.verify_live(store)
    # A fresh orphan (a publish in progress) survives the grace period.
    store.put_bytes(orphan, b"in progress")
    assert pointer.apply_retention(store, keep=2) == []


def test_reader_racing_publish_and_retention_always_sees_a_whole_list(store, recs_dir):
    m, k = publish(store, recs_dir, DS, "run-0")
    pointer.flip_live(store, m, k)
    stop, seen, errors = threading.Event(), [], []

    def read():
        live = reader.LiveRecs(store)
        while not stop.is_set():
            try:
                seen.append([r["item_id"] for r in live.recs("u7")])
            except Exception as e:  # any error is a broken guarantee
                errors.append(e)
            time.sleep(0.002)  # leave the publisher some GIL

    t = threading.Thread(target=read)
    t.start()
    try:
        for i in range(1, 6):
            m, k = publish(store, recs_dir, DS + timedelta(days=i), f"run-{i}")
            pointer.flip_live(store, m, k)
            pointer.apply_retention(store, keep=0, orphan_grace=timedelta(0))
    finally:
        stop.set()
        t.join()
    assert errors == [] and len(seen) > 5
    assert all(items == ["i8", "i9", "i10"] for items in seen)
    assert len(snapshot.list_manifests(store)) == 2  # live + previous
    reader.verify_live(store)


@pytest.mark.breaks_live
def test_verify_live_catches_a_tampered_part(store, recs_dir):
    manifest, key = publish(store, recs_dir, DS, "run-a")
    pointer.flip_live(store, manifest, key)
    part = manifest.parts[1].key
    data = bytearray(store.get_bytes(part))
    data[len(data) // 2] ^= 0xFF
    store.put_bytes(part, bytes(data))
    with pytest.raises(pointer.SnapshotInvalid, match="checksum"):
        reader.verify_live(store)


def test_flip_refuses_a_snapshot_with_a_missing_part(store, recs_dir):
    manifest, key = publish(store, recs_dir, DS, "run-a")
    store.delete([manifest.parts[0].key])
    with pytest.raises(pointer.SnapshotInvalid, match="missing"):
        pointer.flip_live(store, manifest, key)
    assert pointer.read_live(store) is None


def test_probe_accepts_stores_that_enforce_conditional_writes(store):
    probe_conditional_writes(store)
    assert store.list("_probe/") == []


# ------------------------------------------------------------------ S3 wire behaviour and faults


def test_pointer_flip_sends_conditional_headers(s3_store, recs_dir):
    seen = []

    def capture(request, **_):
        if request.url.split("?")[0].endswith("/_live.json"):
            seen.append(
                {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
            )

    s3_store.client.meta.events.register("before-send.s3.PutObject", capture)
    m1, k1 = publish(s3_store, recs_dir, DS, "run-1")
    pointer.flip_live(s3_store, m1, k1)
    etag = s3_store.head(pointer.POINTER_KEY).etag
    m2, k2 = publish(s3_store, recs_dir, DS, "run-2")
    pointer.flip_live(s3_store, m2, k2)
    assert len(seen) == 2
    assert seen[0].get("if-none-match") == "*" and "if-match" not in seen[0]
    assert seen[1].get("if-match") == etag and "if-none-match" not in seen[1]


def test_transient_503s_are_retried_and_logged(s3_store, recs_dir, caplog):
    attempts: dict[str, int] = {}

    def flaky(request, **_):
        key = _key_of(request)
        attempts[key] = attempts.get(key, 0) + 1
        return _503(request) if attempts[key] <= 2 else None

    s3_store.client.meta.events.register("before-send.s3.PutObject", flaky)
    with caplog.at_level(logging.WARNING, logger="nightrec.io.store"):
        manifest, key = publish(s3_store, recs_dir, DS, "run-a")
        pointer.flip_live(s3_store, manifest, key)
    assert attempts["_live.json"] == 3 and attempts["manifest.json"] == 3
    assert "succeeded after 2 retries" in caplog.text
    assert reader.verify_live(s3_store).run_id == "run-a"


def test_persistent_failure_after_k_parts_names_bucket_key_code_and_keeps_pointer(s3_store, recs_dir):
    m1, k1 = publish(s3_store, recs_dir, DS, "run-1")
    pointer.flip_live(s3_store, m1, k1)
    live_before = s3_store.get_bytes(pointer.POINTER_KEY)
    parts_before = {p.key: s3_store.get_bytes(p.key) for p in m1.parts}
    puts = []

    def fail_after_two(request, **_):
        puts.append(_key_of(request))
        return _503(request) if len(set(puts)) > 2 else None

    s3_store.client.meta.events.register("before-send.s3.PutObject", fail_after_two)
    with pytest.raises(StoreError) as e:
        publish(s3_store, recs_dir, DS + timedelta(days=1), "run-2", shard_count=4)
    msg = str(e.value)
    assert s3_store.bucket in msg and "part-00002.parquet" in msg and "HTTP 503" in msg
    assert (e.value.bucket, e.value.code) == (s3_store.bucket, 503)
    assert (
        puts.count("part-00002.parquet") == 4 and "4 attempt(s)" in msg
    )  # max_attempts=3 retries, botocore's meaning
    assert s3_store.get_bytes(pointer.POINTER_KEY) == live_before
    assert {k: s3_store.get_bytes(k) for k in parts_before} == parts_before
    assert reader.verify_live(s3_store).run_id == "run-1"


def test_ambiguous_pointer_write_is_recognised_as_own(s3_store, recs_dir):
    m1, k1 = publish(s3_store, recs_dir, DS, "run-1")
    pointer.flip_live(s3_store, m1, k1)
    m2, k2 = publish(s3_store, recs_dir, DS, "run-2")
    raised = []

    def lose_response(http_response, **_):
        if http_response.url.endswith("/_live.json") and not raised:
            raised.append(http_response.status_code)
            raise ConnectionError("connection reset after the server applied the write")

    s3_store.client.meta.events.register("after-call.s3.PutObject", lose_response)
    live = pointer.flip_live(s3_store, m2, k2)
    assert raised == [200]
    assert (live.run_id, live.generation) == ("run-2", 2)
    assert reader.verify_live(s3_store).run_id == "run-2"


def test_probe_refuses_a_store_that_ignores_conditional_writes(tmp_path):
    class IgnoresConditions(LocalStore):  # what rclone serve s3 and s3rver do
        def put_if(self, key, data, *, if_match=None, if_none_match=False):
            self.put_bytes(key, data)
            return "etag-ignored"

    with pytest.raises(StoreError, match="ignores conditional writes"):
        probe_conditional_writes(IgnoresConditions(tmp_path))


@pytest.mark.parametrize("endpoint", ["moto", pytest.param("seaweedfs", marks=pytest.mark.slow)])
def test_a_part_past_the_multipart_size_goes_up_in_parts_and_reads_back_whole(
    endpoint, request, monkeypatch, tmp_path
):
    url = request.getfixturevalue("moto_endpoint" if endpoint == "moto" else "seaweedfs_endpoint")
    plain = _bucket_store(url, monkeypatch, tmp_path, shared_bucket="nightrec-multipart")
    store = open_store(plain.url, max_attempts=3, multipart_mb=5)
    body = os.urandom(12 * 2**20)  # 12 MiB: three parts of 5, 5 and 2
    (tmp_path / "part.parquet").write_bytes(body)
    store.put_file("snapshots/part-00000.parquet", tmp_path / "part.parquet")
    head = store.client.head_object(Bucket=store.bucket, Key=store._key("snapshots/part-00000.parquet"))
    assert head["ETag"].strip('"').endswith("-3")  # a multipart object's ETag counts its parts
    assert store.get_bytes("snapshots/part-00000.parquet") == body
    small = open_store(plain.url, max_attempts=3)  # the default size: the same file in one request
    small.put_file("snapshots/part-00001.parquet", tmp_path / "part.parquet")
    one = small.client.head_object(Bucket=small.bucket, Key=small._key("snapshots/part-00001.parquet"))
    assert "-" not in one["ETag"].strip('"')
