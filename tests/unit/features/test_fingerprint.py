"""The build_features fingerprint covers the previous night's vocabulary (issue 7)."""

from __future__ import annotations

from datetime import timedelta

from nightrec.features import build
from nightrec.io import lake
from schemas.tables import VOCAB
from tests.unit.features.conftest import CFG, RUN_DATE


def _mark_vocab(lake_root, ds, fp: str) -> None:
    path = lake.partition_path(lake_root, VOCAB.name, ds)
    path.mkdir(parents=True, exist_ok=True)
    lake.write_marker(path, fp, table=VOCAB.name, rows=1)


def test_a_changed_previous_vocabulary_changes_the_fingerprint(tiny_raw, tmp_path):
    lake_root = tmp_path / "lake"
    first_night = build.fingerprint(tiny_raw, RUN_DATE, CFG, lake_root)
    assert build.fingerprint(tiny_raw, RUN_DATE, CFG, lake_root) == first_night  # stable

    yesterday = RUN_DATE - timedelta(days=1)
    _mark_vocab(lake_root, yesterday, "vocab-a")
    after_a = build.fingerprint(tiny_raw, RUN_DATE, CFG, lake_root)
    assert after_a != first_night

    _mark_vocab(lake_root, yesterday, "vocab-b")  # night N-1 rebuilt from other inputs
    after_b = build.fingerprint(tiny_raw, RUN_DATE, CFG, lake_root)
    assert after_b != after_a

    _mark_vocab(lake_root, yesterday - timedelta(days=1), "older")  # not the one night N extends
    assert build.fingerprint(tiny_raw, RUN_DATE, CFG, lake_root) == after_b
    _mark_vocab(lake_root, RUN_DATE, "own")  # the night's own vocabulary is an output, not an input
    _mark_vocab(lake_root, RUN_DATE + timedelta(days=1), "later")
    assert build.fingerprint(tiny_raw, RUN_DATE, CFG, lake_root) == after_b

    _mark_vocab(lake_root, yesterday, "vocab-a")  # back to the first vocabulary
    assert build.fingerprint(tiny_raw, RUN_DATE, CFG, lake_root) == after_a
