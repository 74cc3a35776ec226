"""Exact top-N inner-product search over the recommendable items, in chunks of users.

Why not a plain ``topk(users @ items.T + mask)``: at 4,096 users x 100,000 items the logits matrix is 1.6 GB.
Allocating it afresh per chunk costs more page faults than the matrix product itself, adding an availability
mask rewrites all of it, and ``topk`` over 100,000 columns scans it once more. So:

- unavailable items are dropped from the item matrix instead of masked (they cost nothing);
- the product goes into a reused buffer, in bf16 where the CPU has native bf16 dot products (AVX-512 BF16 or
  AMX) or on CUDA; the candidates found in bf16 are then rescored in fp32, with a margin, so the scores and
  order handed on are the fp32 ones;
- top-k is two-level and exact: the columns are viewed as ``groups`` interleaved slices, the max over the
  slices gives one value per "block" of ``groups`` columns, the k best blocks are kept and top-k runs over their
  ``k * groups`` members only. Each of the k best items sits in a block whose max is at least the k-th best
  value, and at most k blocks have such a max, so the k best blocks hold all k best items.

On a CPU with native bf16 and numba installed, steps after the product run as one compiled pass per row
(``select_kernel``: the same two-level argument, with the row held in cache): 3x the torch selection's
users/s at 100k items (bench/results/precompute.md). The torch path serves CUDA, fp32 and installs without
numba.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from nightrec.scoring import select_kernel

MatmulDtype = Literal["auto", "float32", "bfloat16"]
_GROUPS = 32  # columns per block of the two-level top-k; 32 measured best at 100k items on AVX-512


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True where the CPU has bf16 dot-product instructions (else bf16 matmul is emulated, slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in (" avx512_bf16", " amx_bf16"))


def resolve_dtype(requested: MatmulDtype, device: torch.device) -> torch.dtype:
    if requested == "float32":
        return torch.float32
    if requested == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR tensor from valid parts (row pointers, sorted unique columns per row), unchecked."""
    with warnings.catch_warnings():
        # torch labels sparse CSR "beta"; the one product used (CSR x dense on the CPU) is tested here.
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, cols, values, size=shape, check_invariants=False)


def row_slice(users: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Rows ``lo:hi`` of a dense or sparse CSR tensor (CSR tensors cannot be sliced in torch)."""
    if users.layout != torch.sparse_csr:
        return users[lo:hi]
    crow = users.crow_indices()
    a, z = int(crow[lo]), int(crow[hi])
    return csr(
        crow[lo : hi + 1] - a, users.col_indices()[a:z], users.values()[a:z], (hi - lo, users.shape[1])
    )


class ExactTopN:
    """Top-N items by inner product for chunks of user vectors, excluding per-user seen items.

    User vectors may come as a sparse CSR tensor (EASE's engagement rows): the product then costs their
    non-zeros times the items, not their width.

    Args:
        item_vecs: float [N, D], one row per item of the item table.
        allowed: bool [N], the items that may be returned (available, not blocked).
        dtype: matmul precision: ``auto`` = bf16 where the hardware has it, else fp32.
        max_buffer_bytes: bound on the score buffer; users are processed in sub-blocks that fit.
        kernel: use the compiled selection (``select_kernel``); None = wherever it can run.
    """

    def __init__(
        self,
        item_vecs: torch.Tensor,
        allowed: np.ndarray,
        dtype: MatmulDtype = "auto",
        max_buffer_bytes: int = 1 << 30,
        groups: int = _GROUPS,
        kernel: bool | None = None,
    ):
        device = item_vecs.device
        self.dtype = resolve_dtype(dtype, device)
        self.cols = torch.from_numpy(np.flatnonzero(allowed)).to(device)
        inv = np.full(len(allowed), -1, dtype=np.int64)
        inv[np.flatnonzero(allowed)] = np.arange(int(allowed.sum()))
        self.inverse = inv  # full item position -> column of the allowed matrix (-1 = not allowed)
        self.n_ok = len(self.cols)
        self.exact = item_vecs.float()[self.cols].contiguous()  # fp32 [n_ok, D], for rescoring
        self.groups = groups
        self.n_blocks = max(1, -(-self.n_ok // groups))
        width = self.n_blocks * groups
        # The compiled selection wants whole tiles of columns; it runs where bf16 is native to the CPU.
        can_fuse = device.type == "cpu" and self.dtype == torch.bfloat16 and select_kernel.available()
        if kernel and not can_fuse:
            raise ValueError("the compiled selection needs numba, a CPU tensor and bf16 scores")
        self.fused = can_fuse if kernel is None else kernel
        if self.fused:
            width = max(1, -(-self.n_ok // select_kernel.TILE)) * select_kernel.TILE
            self.exact_np = self.exact.numpy()
            self.cols_np = self.cols.numpy()
        weights = torch.zeros(width, item_vecs.shape[1], dtype=self.dtype, device=device)
        weights[: self.n_ok] = self.exact.to(self.dtype)
        self.weights_t = weights.T.contiguous()  # [D, width]: mm(users, weights_t, out=buffer)
        self.width = width
        elem = torch.finfo(self.dtype).bits // 8
        self.rows_per_block = max(1, max_buffer_bytes // (width * elem))
        self._buffer: torch.Tensor | None = None

    def search(
        self, users: torch.Tensor, n: int, seen_rows: np.ndarray, seen_items: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``n`` allowed, unseen items for each user row.

        Args:
            users: float [B, D] user vectors.
            n: number of items per user (capped at the number of allowed items).
            seen_rows, seen_items: pairs (row in ``users``, full item position) never to return.

        Returns:
            (scores float32 [B, n] sorted descending, -inf where fewer than n items qualify;
            item positions int64 [B, n] in the full item table, -1 where the score is -inf).
        """
        n = min(n, self.n_ok)
        b = users.shape[0]
        scores = torch.full((b, n), float("-inf"))
        items = torch.full((b, n), -1, dtype=torch.long)
        if n == 0 or b == 0:
            return scores, items
        cols = self.inverse[seen_items]
        keep = cols >= 0
        order = np.argsort(seen_rows[keep], kind="stable")
        seen_rows, cols = seen_rows[keep][order], cols[keep][order]
        for lo in range(0, b, self.rows_per_block):
            hi = min(b, lo + self.rows_per_block)
            a, z = np.searchsorted(seen_rows, [lo, hi])
            block = row_slice(users, lo, hi).to(self.weights_t.device)
            s, i = self._block(block, n, seen_rows[a:z] - lo, cols[a:z])
            scores[lo:hi], items[lo:hi] = s.cpu(), i.cpu()
        return scores, items

    def _block(self, users: torch.Tensor, n: int, rows: np.ndarray, cols: np.ndarray):
        b = users.shape[0]
        if users.layout == torch.sparse_csr and self.dtype != torch.float32:
            # bf16 rescoring gathers dense rows; sparse rows come from fp32 baselines.
            users = users.to_dense()
        buf = self._scores_buffer(b)
        torch.mm(users.to(self.dtype), self.weights_t, out=buf)
        buf[:, self.n_ok :] = float("-inf")
        if len(rows):
            dev = buf.device
            buf[torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)] = float("-inf")
        # bf16 picks a margin of extra candidates whose fp32 scores decide the final order.
        k = n if self.dtype == torch.float32 else min(self.n_ok, n + 8 + n // 8)
        if self.fused:
            scores, cols = select_kernel.select_rows(
                buf.view(torch.int16).numpy(),
                users.float().contiguous().numpy(),
                self.exact_np,
                self.n_ok,
                k,
                n,
                threads=torch.get_num_threads(),
            )
            items = np.where(cols >= 0, self.cols_np[np.maximum(cols, 0)], -1)
            return torch.from_numpy(scores), torch.from_numpy(items)
        cand = self._topk_columns(buf, k)
        picked = torch.gather(buf, 1, cand)
        cand = cand.clamp(max=self.n_ok - 1)  # a padding column is picked only with score -inf
        if self.dtype == torch.float32:
            # The buffer's scores are the exact ones. Rescoring would gather [B, k, D] item vectors: with
            # EASE's D of thousands that is gigabytes per chunk (6.9 GB for 4,096 users x 200 x 2,000 items).
            exact = picked
        else:
            exact = torch.bmm(self.exact[cand], users.float().unsqueeze(2)).squeeze(2)
            exact = exact.masked_fill(~torch.isfinite(picked), float("-inf"))
        top, pos = torch.topk(exact, n, dim=1)
        cols_out = torch.gather(cand, 1, pos)
        items = torch.where(torch.isfinite(top), self.cols[cols_out], -1)
        return top, items

    def _topk_columns(self, buf: torch.Tensor, k: int) -> torch.Tensor:
        b = buf.shape[0]
        if k * 4 > self.n_blocks:  # too few blocks for the two-level pass to save anything
            return torch.topk(buf[:, : self.n_ok], k, dim=1, sorted=False).indices
        view = buf.view(b, self.groups, self.n_blocks)  # column g * n_blocks + j is member g of block j
        blocks = torch.topk(view.amax(1), k, dim=1, sorted=False).indices  # [b, k]
        members = torch.gather(view, 2, blocks.unsqueeze(1).expand(b, self.groups, k)).reshape(b, -1)
        pos = torch.topk(members, k, dim=1, sorted=False).indices  # over [b, groups * k]
        return (pos // k) * self.n_blocks + torch.gather(blocks, 1, pos % k)

    def _scores_buffer(self, rows: int) -> torch.Tensor:
        # One buffer reused across chunks: a fresh 1 GB tensor per chunk costs more in page faults than the matmul.
        if self._buffer is None or self._buffer.shape[0] < rows:
            self._buffer = torch.empty(
                min(max(rows, 1), self.rows_per_block),
                self.width,
                dtype=self.dtype,
                device=self.weights_t.device,
            )
        return self._buffer[:rows]


class RankedTopN:
    """Top-N for scores every user shares (a popularity order), with each user's seen items skipped.

    A user's list is the shared order minus what they have seen, so a chunk costs its users times the top of
    the order they reach (N plus their seen items there), not users x items as the product would: popularity's
    lists for 100,000 users over 100,000 items in well under a second. The answer is ``ExactTopN``'s for the
    same scores (ties: the lower item position first).

    Args:
        scores: float [N], one score per item of the item table.
        allowed: bool [N], the items that may be returned (available, not blocked).
    """

    def __init__(self, scores: np.ndarray, allowed: np.ndarray):
        ok = np.flatnonzero(allowed)
        order = ok[np.lexsort((ok, -np.asarray(scores, dtype=np.float64)[ok]))]
        self.order = torch.from_numpy(order)
        self.sorted_scores = torch.from_numpy(np.asarray(scores, dtype=np.float32)[order])
        self.place = np.full(len(allowed), -1, dtype=np.int64)  # item position -> place in the order
        self.place[order] = np.arange(len(order))
        self.n_ok = len(order)

    def search(
        self, users: torch.Tensor, n: int, seen_rows: np.ndarray, seen_items: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As ``ExactTopN.search`` (only the number of user rows is read from ``users``)."""
        n = min(n, self.n_ok)
        b = users.shape[0]
        if n == 0 or b == 0:
            return torch.full((b, n), float("-inf")), torch.full((b, n), -1, dtype=torch.long)
        place = self.place[seen_items]
        keep = place >= 0
        rows, place = seen_rows[keep], place[keep]
        # The top of the order that holds every user's n unseen items: n plus their seen items inside it,
        # grown until no user has more seen items inside than it allows for.
        width = n
        while width < self.n_ok:
            inside = place < width
            need = min(self.n_ok, n + int(np.bincount(rows[inside], minlength=b).max(initial=0)))
            if need <= width:
                break
            width = need
        inside = place < width
        slot = torch.arange(width).expand(b, width).clone()
        # A seen item's slot moves past every other, so the first n slots left are the unseen ones.
        slot[torch.from_numpy(rows[inside]), torch.from_numpy(place[inside])] = width
        first = torch.topk(slot, n, dim=1, largest=False).values  # each row's first n unseen places, in order
        found = first < width
        first = first.clamp(max=self.n_ok - 1)
        scores = torch.where(found, self.sorted_scores[first], float("-inf"))
        items = torch.where(found, self.order[first], -1)
        return scores, items
