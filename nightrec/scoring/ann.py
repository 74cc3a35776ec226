"""Approximate top-N with a FAISS inverted-file index, for catalogs where the exact product is too slow.

Same contract as ``retrieve.ExactTopN.search``; unavailable items are left out of the index, seen items are
filtered from an over-fetched result. The inner products FAISS returns for an ``IndexIVFFlat`` are exact for the
items it finds; what it trades is recall (the true top items in clusters it does not probe are missed), which
``bench/precompute.py --ann`` measures against the exact search. faiss-cpu is an optional dependency
(``pip install 'nightrec[ann]'``).
"""

from __future__ import annotations

import numpy as np
import torch


def _faiss():
    try:
        import faiss
    except ImportError as e:  # the exact index needs nothing; say how to get this one
        raise ImportError(
            "scoring.index = 'ivf' needs faiss-cpu: pip install 'nightrec[ann]' (or faiss-cpu)"
        ) from e
    return faiss


class IvfTopN:
    """FAISS ``IndexIVFFlat`` (inner product) over the allowed items.

    Args:
        item_vecs: float [N, D] item vectors.
        allowed: bool [N], the items that may be returned.
        n_lists: number of clusters (None = about 4 * sqrt(allowed items)).
        n_probe: clusters visited per query (recall grows with it, and so does the cost).
        seed: k-means seed (the index, and so the lists, are reproducible).
    """

    def __init__(
        self,
        item_vecs: torch.Tensor,
        allowed: np.ndarray,
        n_lists: int | None = None,
        n_probe: int = 16,
        seed: int = 0,
    ):
        faiss = _faiss()
        self.cols = np.flatnonzero(allowed)
        self.n_ok = len(self.cols)
        vecs = np.ascontiguousarray(item_vecs.float().numpy()[self.cols])
        d = vecs.shape[1]
        n_lists = n_lists or max(1, int(4 * np.sqrt(max(self.n_ok, 1))))
        n_lists = min(n_lists, max(1, self.n_ok // 39))  # FAISS wants >= 39 training points per list
        quantizer = faiss.IndexFlatIP(d)
        self.index = faiss.IndexIVFFlat(quantizer, d, n_lists, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        if self.n_ok:
            self.index.train(vecs)
            self.index.add(vecs)
        self.index.nprobe = min(n_probe, n_lists)
        inv = np.full(len(allowed), -1, dtype=np.int64)
        inv[self.cols] = np.arange(self.n_ok)
        self.inverse = inv

    def search(
        self, users: torch.Tensor, n: int, seen_rows: np.ndarray, seen_items: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``ExactTopN.search``: (scores [B, n] descending, -inf where short; item positions, -1 there)."""
        n = min(n, self.n_ok)
        b = users.shape[0]
        scores = np.full((b, n), -np.inf, dtype=np.float32)
        items = np.full((b, n), -1, dtype=np.int64)
        if n == 0 or b == 0:
            return torch.from_numpy(scores), torch.from_numpy(items)
        cols = self.inverse[seen_items]
        keep = cols >= 0
        seen_rows, cols = seen_rows[keep], cols[keep]
        extra = int(np.bincount(seen_rows, minlength=b).max()) if len(seen_rows) else 0
        k = min(self.n_ok, n + extra)
        dense = users.to_dense() if users.layout == torch.sparse_csr else users  # EASE's rows come sparse
        dist, idx = self.index.search(np.ascontiguousarray(dense.float().numpy()), k)
        # Drop seen items (and FAISS's -1 padding), then keep each row's first n survivors in score order.
        width = max(self.n_ok, 1)
        seen_codes = seen_rows.astype(np.int64) * width + cols
        codes = np.arange(b, dtype=np.int64)[:, None] * width + idx
        ok = (idx >= 0) & ~np.isin(codes, seen_codes)
        rank = np.cumsum(ok, axis=1) - 1
        r, c = np.nonzero(ok & (rank < n))
        scores[r, rank[r, c]] = dist[r, c]
        items[r, rank[r, c]] = self.cols[idx[r, c]]
        return torch.from_numpy(scores), torch.from_numpy(items)
