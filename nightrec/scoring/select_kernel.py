"""Fused top-N selection over rows of bf16 scores, compiled with numba: the CPU half of ``ExactTopN``.

Why a kernel: after the bf16 matrix product (near the CPU's peak), selecting the top 100 of 100,000 scores per
user with torch ops costs three times the product: each op (block max, top-k of blocks, gather, top-k of
members, rescoring) is a pass over memory, and torch's reductions over short runs are not vectorised. Here
each row is handled start to end while it sits in L2:

1. **Block maxima, vectorised.** Columns are viewed as tiles of ``DEPTH`` x ``LANES``: block (t, s) is the
   ``DEPTH`` columns ``t * TILE + g * LANES + s``. One tile's ``LANES`` block maxima are then element-wise
   max/min over ``DEPTH`` vectors of ``LANES`` int16 (one AVX-512 register), with no horizontal reduction.
   The bf16 bits are compared as int16: for non-negative floats int16 order is float order; a block with no
   non-negative score has as its max the negative float of smallest magnitude, which is its int16 *min*.
2. **Threshold.** ``tau`` = the m-th largest block maximum (radix select on 16-bit keys, no sort). The m
   best items all lie in blocks whose max is at least ``tau`` (the argument of the two-level top-k).
3. **Candidates.** Only those blocks (about m of thousands) are scanned; items scoring at least ``tau``
   (about m) are kept.
4. **Exact order.** The candidates are rescored in fp32 against the fp32 item vectors and sorted, so the
   scores and order handed on are fp32 ones; bf16 only decides who is a candidate, with a margin (``m > n``).

``select_rows`` releases the GIL and is run on row ranges by a few Python threads: no numba threading layer,
so no clash with torch's OpenMP pool, safe in forked Spark workers and from concurrent callers.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

try:
    import numba as nb
except ImportError:  # the torch selection in retrieve.py is used instead
    nb = None

LANES = 32  # int16 lanes of one AVX-512 register
DEPTH = 64  # columns per block
TILE = LANES * DEPTH
_NEG_INF_KEY = 0x007F  # key of bf16 -inf (bits 0xFF80): masked columns never qualify


def available() -> bool:
    return nb is not None


if nb is not None:

    @nb.njit(inline="always")
    def _key(x):
        # bf16 bits (as int16) -> uint16 whose unsigned order is the float order: flip all bits of negatives,
        # only the sign bit of non-negatives.
        return np.uint16(x) ^ (np.uint16(x >> 15) | np.uint16(0x8000))

    @nb.njit(cache=True, nogil=True)
    def _kth_largest(keys, k):
        """The k-th largest of uint16 ``keys`` (1 <= k <= len): two-pass radix select, O(len)."""
        hist = np.zeros(256, np.int64)
        for x in keys:
            hist[x >> 8] += 1
        hi = 255
        above = 0
        while above + hist[hi] < k:
            above += hist[hi]
            hi -= 1
        hist[:] = 0
        for x in keys:
            if (x >> 8) == hi:
                hist[x & 255] += 1
        lo = 255
        while above + hist[lo] < k:
            above += hist[lo]
            lo -= 1
        return np.uint16((hi << 8) | lo)

    @nb.njit(cache=True, nogil=True, fastmath=True)
    def _dot(v, u):
        acc = np.float32(0.0)
        for z in range(u.shape[0]):
            acc += v[z] * u[z]
        return acc

    @nb.njit(cache=True, nogil=True)
    def _select_row(row, u, exact, n_ok, m, n, out_s, out_i):
        ntiles = row.shape[0] // TILE
        nblk = ntiles * LANES
        bkey = np.empty(nblk, np.uint16)
        mx = np.empty(LANES, np.int16)
        mn = np.empty(LANES, np.int16)
        for t in range(ntiles):
            base = t * TILE
            for s in range(LANES):
                mx[s] = row[base + s]
                mn[s] = row[base + s]
            for g in range(1, DEPTH):
                o = base + g * LANES
                for s in range(LANES):
                    v = row[o + s]
                    mx[s] = max(mx[s], v)
                    mn[s] = min(mn[s], v)
            for s in range(LANES):
                bkey[t * LANES + s] = _key(mx[s]) if mx[s] >= 0 else _key(mn[s])
        # With fewer blocks than m, the m-th best item may lie below every block's max: take all items.
        tau = _kth_largest(bkey, m) if m <= nblk else np.uint16(0)
        if tau <= _NEG_INF_KEY:
            tau = np.uint16(_NEG_INF_KEY + 1)
        nsel = 0
        for b in range(nblk):
            if bkey[b] >= tau:
                nsel += 1
        cand = np.empty(nsel * DEPTH, np.int64)
        cnt = 0
        for b in range(nblk):
            if bkey[b] >= tau:
                base = (b // LANES) * TILE + b % LANES
                for g in range(DEPTH):
                    c = base + g * LANES
                    if c < n_ok and _key(row[c]) >= tau:
                        cand[cnt] = c
                        cnt += 1
        scores = np.empty(cnt, np.float32)
        for q in range(cnt):
            scores[q] = _dot(exact[cand[q]], u)
        order = np.argsort(-scores)
        top = min(n, cnt)
        for q in range(top):
            out_s[q] = scores[order[q]]
            out_i[q] = cand[order[q]]
        for q in range(top, n):
            out_s[q] = -np.inf
            out_i[q] = -1

    @nb.njit(cache=True, nogil=True)
    def _select_rows(bits, users, exact, n_ok, m, n, out_s, out_i, lo, hi):
        for r in range(lo, hi):
            _select_row(bits[r], users[r], exact, n_ok, m, n, out_s[r], out_i[r])


def select_rows(
    bits: np.ndarray,
    users: np.ndarray,
    exact: np.ndarray,
    n_ok: int,
    m: int,
    n: int,
    threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` columns of each row of bf16 scores, by fp32 rescoring of the bf16 top-``m`` blocks' items.

    Args:
        bits: int16 [B, W], the bf16 scores' bits; W a multiple of ``TILE``; excluded columns hold -inf.
        users: float32 [B, D], the rows' user vectors.
        exact: float32 [n_ok, D], the fp32 vector of each scored column.
        n_ok: columns at or past it are padding, never returned.
        m: blocks kept per row (>= n; the margin over n absorbs bf16 rounding).
        n: results per row.
        threads: Python threads over row ranges (the kernel releases the GIL).

    Returns:
        (scores float32 [B, n] descending, -inf where fewer than n columns qualify; columns int64 [B, n], -1 there).
    """
    b = bits.shape[0]
    out_s = np.empty((b, n), np.float32)
    out_i = np.empty((b, n), np.int64)
    if b == 0:
        return out_s, out_i
    args = (bits, users, exact, n_ok, m, n, out_s, out_i)
    threads = max(1, min(threads, b))
    if threads == 1:
        _select_rows(*args, 0, b)
        return out_s, out_i
    step = -(-b // threads)
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(_select_rows, *args, lo, min(b, lo + step)) for lo in range(0, b, step)]:
            f.result()
    return out_s, out_i
