"""The local-folder store: atomic writes, compare-and-swap under a file lock, S3-like keys and listing."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from nightrec.io.store import KeyNotFound, LocalStore, PreconditionFailed, S3Store, StoreError, open_store


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_open_store_parses_urls(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert open_store(f"file://{tmp_path}/a").root == tmp_path / "a"
    assert open_store(str(tmp_path / "b")).root == tmp_path / "b"
    s3 = open_store("s3://bucket/some/prefix/")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix, s3.url) == (
        "bucket",
        "some/prefix",
        "s3://bucket/some/prefix",
    )
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store("gs://bucket/x")


def test_round_trip_head_list_delete(store):
    store.put_bytes("recs/ds=1/run=a/part-0.parquet", b"abc")
    store.put_bytes("recs/ds=1/run=a/manifest.json", b"{}")
    store.put_bytes("recs/ds=2/run=b/manifest.json", b"{}")
    assert store.get_bytes("recs/ds=1/run=a/part-0.parquet") == b"abc"
    info = store.head("recs/ds=1/run=a/part-0.parquet")
    assert (info.etag, info.size) == (hashlib.sha256(b"abc").hexdigest(), 3)
    assert store.head("recs/nope") is None
    assert store.list("recs/ds=1/") == ["recs/ds=1/run=a/manifest.json", "recs/ds=1/run=a/part-0.parquet"]
    assert store.list("recs/ds=") == store.list("recs/") == store.list("")[:3]
    store.delete(["recs/ds=1/run=a/part-0.parquet", "recs/ds=1/run=a/manifest.json", "never/existed"])
    assert store.list("recs/") == ["recs/ds=2/run=b/manifest.json"]
    assert not (store.root / "recs" / "ds=1").exists()  # empty folders are pruned
    with pytest.raises(KeyNotFound, match="recs/ds=1/run=a/part-0.parquet"):
        store.get_bytes("recs/ds=1/run=a/part-0.parquet")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/.hidden", "./a"])
def test_invalid_keys_are_refused(store, key):
    with pytest.raises(StoreError, match="invalid store key"):
        store.put_bytes(key, b"x")


def test_put_file_and_atomic_write_leave_no_temp_files(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00" * 1000)
    store.put_file("f/x.bin", src)
    store.put_if("f/y.json", b"1", if_none_match=True)
    assert store.get_bytes("f/x.bin") == src.read_bytes()
    names = sorted(p.name for p in (store.root / "f").iterdir())
    assert [n for n in names if n.endswith(".tmp")] == []
    assert store.list("f/") == ["f/x.bin", "f/y.json"]  # lock files stay invisible


def test_failed_write_keeps_the_old_object(store, monkeypatch):
    store.put_bytes("k.json", b"old")

    def refused(src, dst):  # disk full has its own test (tests/unit/io/test_disk_full.py)
        raise OSError(13, "Permission denied")

    monkeypatch.setattr("nightrec.io.store.os.replace", refused)
    with pytest.raises(StoreError, match="Permission denied"):
        store.put_bytes("k.json", b"new")
    monkeypatch.undo()
    assert store.get_bytes("k.json") == b"old"
    assert [p.name for p in store.root.iterdir()] == ["k.json"]


def test_put_if_semantics(store):
    etag = store.put_if("p.json", b"v1", if_none_match=True)
    assert etag == store.head("p.json").etag
    with pytest.raises(PreconditionFailed):
        store.put_if("p.json", b"v2", if_none_match=True)
    etag2 = store.put_if("p.json", b"v2", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put_if("p.json", b"v3", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put_if("absent.json", b"v", if_match=etag2)
    assert store.get_with_etag("p.json") == (b"v2", etag2)


def test_concurrent_cas_exactly_one_wins(tmp_path):
    # Separate store objects, as separate processes would have; they share only the folder.
    root: Path = tmp_path / "store"
    LocalStore(root).put_bytes("p.json", b"v0")
    etag = LocalStore(root).head("p.json").etag
    barrier, wins, losses = threading.Barrier(8), [], []

    def writer(i):
        barrier.wait()
        try:
            LocalStore(root).put_if("p.json", f"v{i + 1}".encode(), if_match=etag)
            wins.append(i)
        except PreconditionFailed:
            losses.append(i)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    assert LocalStore(root).get_bytes("p.json") == f"v{wins[0] + 1}".encode()
