"""Scenario 24, disk full: every write names its path, leaves no half-written marker/manifest/list, keeps what
was live. The fault is real: ``RLIMIT_FSIZE`` makes the kernel refuse writes past a size (EFBIG), with
``SIGXFSZ`` ignored so the write fails instead of the process dying."""

from __future__ import annotations

import errno
import resource
import signal
from contextlib import contextmanager
from datetime import date, timedelta

import pytest

from nightrec.errors import DiskFull
from nightrec.io import disk, lake
from nightrec.io.store import open_store
from nightrec.publish import pointer, reader, snapshot
from tests.unit.publish import publish, write_recs

DS = date(2026, 11, 22)


@contextmanager
def file_size_limit(nbytes: int):
    """Files of this process cannot grow past ``nbytes`` inside the block (writes fail with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


def test_reasons_are_found_by_errno_or_by_text_anywhere_in_the_cause_chain():
    assert disk.no_space_reason(OSError(errno.ENOSPC, "No space left on device")) == "No space left on device"
    try:
        try:
            raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
        except OSError as inner:
            raise RuntimeError("py4j: Job aborted") from inner
    except RuntimeError as outer:
        assert disk.no_space_reason(outer) == "No space left on device"
    assert disk.no_space_reason(OSError(errno.EACCES, "Permission denied")) is None


def test_marker_write_fails_whole_and_leaves_no_marker(tmp_path):
    part = tmp_path / "lake" / "t" / "ds=2026-11-22"
    part.mkdir(parents=True)
    with (
        file_size_limit(16),
        pytest.raises(DiskFull, match=r"no space writing .*_MARKER\.json: File too large"),
    ):
        lake.write_marker(part, "fp", rows=3)
    assert lake.read_marker(part) is None
    assert sorted(p.name for p in part.iterdir()) == []  # the temp file is gone too


def test_local_store_write_keeps_the_old_object_and_names_the_key(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    store.put_bytes("recs/_live.json", b"old pointer")
    with file_size_limit(1024), pytest.raises(DiskFull, match=r"no space writing \S*store/recs/_live\.json"):
        store.put_bytes("recs/_live.json", b"x" * 10_000)
    assert store.get_bytes("recs/_live.json") == b"old pointer"
    assert not [p for p in (tmp_path / "store").rglob("*.tmp")]


def test_publish_on_a_full_disk_keeps_the_live_snapshot_and_writes_no_manifest(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    m1, k1 = publish(store, write_recs(tmp_path / "recs1", n_users=20), DS, "run-1")
    pointer.flip_live(store, m1, k1)
    live_before = store.get_bytes(pointer.POINTER_KEY)
    big = write_recs(tmp_path / "recs2", n_users=3000, k=20)
    with (
        file_size_limit(4096),
        pytest.raises(DiskFull, match=r"no space writing \S*(nightrec-snapshot-|store/)"),
    ):
        publish(store, big, DS + timedelta(days=1), "run-2")
    assert store.get_bytes(pointer.POINTER_KEY) == live_before
    assert snapshot.list_manifests(store) == [k1]
    assert reader.verify_live(store).run_id == "run-1"
    assert not [p for p in (tmp_path / "store").rglob("*.tmp")]


@pytest.mark.slow
@pytest.mark.spark
def test_precompute_on_a_full_disk_leaves_no_list_partition(clean_build, tmp_path):  # noqa: F811
    import torch

    from nightrec.models.configs import DeepFMConfig, TwoTowerConfig
    from nightrec.models.deepfm import DeepFM
    from nightrec.models.two_tower import TwoTower
    from nightrec.scoring.precompute import precompute
    from nightrec.settings import Settings
    from nightrec.training.datasets import vocab_sizes
    from tests.unit.features.conftest import RUN_DATE, lake_copy

    lake_root = lake_copy(clean_build.lake, tmp_path / "lake")
    sizes = vocab_sizes(lake_root, RUN_DATE)
    torch.manual_seed(0)
    models = (
        TwoTower(TwoTowerConfig.from_vocab(sizes, dim=8)),
        DeepFM(DeepFMConfig.from_vocab(sizes, embed_dim=4)),
    )
    settings = Settings(home=tmp_path / "home", lake=lake_root, scoring={"user_chunk_size": 50})
    # A first run compiles the scoring kernels and writes numba's cache beside the code; a night's disk fills
    # under its lists, not under that cache. Warm up on another copy of the lake, with room to write.
    warm = Settings(home=tmp_path / "warm", lake=lake_copy(clean_build.lake, tmp_path / "warm-lake"))
    precompute(warm, RUN_DATE, *models, fingerprint="fp")
    with file_size_limit(2048), pytest.raises(DiskFull, match=r"no space writing .*recs/_staging/.*part-"):
        precompute(settings, RUN_DATE, *models, fingerprint="fp")
    assert not lake.partition_path(lake_root, "recs", RUN_DATE).exists()
    assert list((tmp_path / "lake" / "recs" / "_staging").iterdir()) == []


from tests.unit.features.conftest import clean_build  # noqa: E402, F401  (the shared Spark-built lake)
