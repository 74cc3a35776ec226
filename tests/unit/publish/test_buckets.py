"""The vectorised CRC-32 that buckets users into snapshot parts equals zlib's, on which the layout is defined."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from nightrec.publish import snapshot


def _ids(rng, n: int) -> list[str]:
    alphabet = list("abcXYZ0129-_.:é漢😀")
    lengths = rng.integers(0, 90, n)  # some beyond the vectorised width
    return ["".join(rng.choice(alphabet, size=k)) for k in lengths]


def test_crc32_of_equals_zlib_on_ascii_unicode_empty_and_long_ids():
    rng = np.random.default_rng(7)
    ids = [*_ids(rng, 3000), "", "u0000001", "x" * 500]
    got = snapshot.crc32_of(pa.array(ids, pa.string()))
    want = np.array([zlib.crc32(s.encode("utf-8")) for s in ids], dtype=np.uint32)
    np.testing.assert_array_equal(got, want)


def test_a_sliced_array_and_the_bucket_of_each_row_match_user_bucket():
    rng = np.random.default_rng(8)
    ids = pa.array(_ids(rng, 1000), pa.string()).slice(100, 700)  # a non-zero offset into the buffers
    rows = pa.concat_arrays([ids, ids.slice(0, 50)])  # users repeat, as the K rows of a list do
    got = snapshot.buckets_of(rows, 16)
    np.testing.assert_array_equal(got, [snapshot.user_bucket(u, 16) for u in rows.to_pylist()])
