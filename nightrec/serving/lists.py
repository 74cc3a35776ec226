"""A published snapshot held in memory for serving: columnar, verified, looked up by user in microseconds.

Layout (1M users x K=20 is about 190 MB): per part, its users as one sorted fixed-width byte array and the
offset of each user's first row; for the whole snapshot, one int32 item code, one float32 score and one source
byte per row, and the item ids once. A user is found by the part ``user_bucket`` names (as every reader of the
snapshot finds them) and a binary search in it. No Python object per user or per row.

Loading checks every part against the manifest (size, sha256, rows) from the very bytes it then parses, so a
snapshot is served only as it was published.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import time
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.io.codes import encode
from nightrec.io.store import KeyNotFound, ObjectStore
from nightrec.publish import pointer, snapshot
from schemas.manifest import Manifest, PartInfo

SOURCES = ("model", "fallback")  # source byte -> name
GLOBAL = ""  # the cold-start list for a user of no known segment


class SnapshotRefused(pointer.SnapshotInvalid):
    """A snapshot that failed verification while loading; the service keeps the one it has."""


@dataclass(frozen=True)
class Hit:
    """One user's list, as served: items best first, with score and the list's source."""

    items: list[str]
    scores: list[float]
    source: str  # model, fallback (a cold user in the snapshot, or an unknown user's cold-start list)


@dataclass
class _Part:
    users: np.ndarray  # fixed-width bytes, sorted, unique
    start: np.ndarray  # int64 [users + 1]: rows of user j are start[j]:start[j + 1] in the snapshot's arrays
    n: int = field(init=False)
    width: int = field(init=False)  # bytes of the longest user id (0: no users)

    def __post_init__(self) -> None:
        self.n, self.width = len(self.users), (self.users.dtype.itemsize if len(self.users) else 0)


@dataclass
class ServedSnapshot:
    """One verified snapshot in memory (immutable once built; swapped by reference)."""

    key: str
    manifest: Manifest
    parts: list[_Part]
    item_ids: list[str]
    item: np.ndarray  # int32 per row, into item_ids
    score: np.ndarray  # float32 per row (answers round them to 6 decimals)
    source: np.ndarray  # uint8 per row, into SOURCES
    coldstart: dict[str, Hit] = field(default_factory=dict)
    load_seconds: float = 0.0

    @cached_property
    def tag(self) -> str:
        """``ds=...;generation=...;run=...``: the snapshot's identity, as the API's header gives it."""
        m = self.manifest
        return f"ds={m.ds.isoformat()};generation={m.generation};run={m.run_id}"

    @cached_property
    def tag_bytes(self) -> bytes:
        return self.tag.encode("latin-1", "replace")

    @cached_property
    def identity(self) -> dict:
        m = self.manifest
        return {"ds": m.ds.isoformat(), "generation": m.generation, "run_id": m.run_id}

    @property
    def users(self) -> int:
        return sum(len(p.users) for p in self.parts)

    @property
    def nbytes(self) -> int:
        arrays = [self.item, self.score, self.source, *(a for p in self.parts for a in (p.users, p.start))]
        return sum(a.nbytes for a in arrays)

    def lookup(self, user_id: str, k: int) -> Hit | None:
        """The user's first ``k`` items, or None when the snapshot has no list for them."""
        key = user_id.encode("utf-8")
        part = self.parts[snapshot.user_bucket(user_id, len(self.parts))]
        if len(key) > part.width:
            return None
        j = int(part.users.searchsorted(key))
        if j == part.n or part.users[j] != key:
            return None
        lo, end = part.start[j : j + 2].tolist()
        hi = min(end, lo + k)
        return Hit(
            [self.item_ids[i] for i in self.item[lo:hi].tolist()],
            self.score[lo:hi].astype(np.float64).round(6).tolist(),
            SOURCES[int(self.source[lo])] if hi > lo else SOURCES[1],
        )

    def fallback(self, segment: str | None, k: int) -> Hit:
        """The cold-start list of ``segment`` (the global one when unknown or not given)."""
        hit = self.coldstart.get(segment or GLOBAL) or self.coldstart.get(GLOBAL) or Hit([], [], SOURCES[1])
        return Hit(hit.items[:k], hit.scores[:k], SOURCES[1])


def load(store: ObjectStore, manifest_key: str) -> ServedSnapshot:
    """Fetch, verify and index a published snapshot.

    Raises:
        SnapshotRefused: the manifest is missing or unreadable, or a part is missing, of the wrong size,
            checksum or row count, or not a list table.
    """
    t0 = time.perf_counter()
    try:
        manifest = snapshot.load_manifest(store, manifest_key)
    except KeyNotFound as e:
        raise SnapshotRefused(f"{manifest_key}: manifest missing ({e})") from e
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise SnapshotRefused(f"{manifest_key}: manifest unreadable: {str(e).splitlines()[0]}") from e
    if not manifest.parts:
        raise SnapshotRefused(f"{manifest_key}: no parts")
    item_index: dict[str, int] = {}  # item id -> code, grown part by part
    parts, codes, scores, sources, offset = [], [], [], [], 0
    for info in manifest.parts:  # one part's table in memory at a time
        table = _fetch(store, info)
        values, code = encode(table["item_id"])
        to_snapshot = np.array(
            [item_index.setdefault(v, len(item_index)) for v in values.to_pylist()], dtype=np.int32
        )
        codes.append(to_snapshot[code] if len(code) else np.zeros(0, np.int32))
        scores.append(table["score"].to_numpy().astype(np.float32))
        sources.append(_source_codes(info, table))
        parts.append(_index_part(info, table, offset))
        offset += table.num_rows
        del table
    coldstart = _coldstart(store, manifest.coldstart) if manifest.coldstart else {}
    served = ServedSnapshot(
        key=manifest_key,
        manifest=manifest,
        parts=parts,
        item_ids=list(item_index),
        item=np.concatenate(codes),
        score=np.concatenate(scores),
        source=np.concatenate(sources),
        coldstart=coldstart,
        load_seconds=time.perf_counter() - t0,
    )
    pa.default_memory_pool().release_unused()  # the parts' Arrow buffers: give them back to the system
    _trim_heap()
    return served


def _trim_heap() -> None:
    """Return the heap that indexing freed (part bytes, per-user strings) to the system (glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _fetch(
    store: ObjectStore, part: PartInfo, dictionary: tuple[str, ...] = ("user_id", "item_id", "source")
) -> pa.Table:
    """A part's bytes checked against the manifest, then parsed (strings as Parquet keeps them)."""
    try:
        data = store.get_bytes(part.key)
    except KeyNotFound as e:
        raise SnapshotRefused(f"{part.key}: missing") from e
    if len(data) != part.bytes or hashlib.sha256(data).hexdigest() != part.sha256:
        raise SnapshotRefused(
            f"{part.key}: {len(data)} bytes whose sha256 does not match the manifest ({part.bytes} bytes)"
        )
    try:
        table = pq.read_table(io.BytesIO(data), read_dictionary=list(dictionary))
    except pa.ArrowException as e:
        raise SnapshotRefused(f"{part.key}: not readable Parquet ({e})") from e
    if table.num_rows != part.rows:
        raise SnapshotRefused(f"{part.key}: {table.num_rows} rows, the manifest says {part.rows}")
    return table


def _source_codes(info: PartInfo, table: pa.Table) -> np.ndarray:
    values, code = encode(table["source"])
    names = values.to_pylist()
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise SnapshotRefused(f"{info.key}: unknown source values {unknown}")
    return np.array([SOURCES.index(v) for v in names], dtype=np.uint8)[code]


def _index_part(info: PartInfo, table: pa.Table, offset: int) -> _Part:
    """Users of a part (sorted by user_id then rank, as the snapshot writer leaves them) and their row spans."""
    values, code = encode(table["user_id"])
    if not len(code):
        return _Part(np.zeros(0, dtype="S1"), np.zeros(1, dtype=np.int64) + offset)
    firsts = np.concatenate([[0], np.flatnonzero(np.diff(code)) + 1])
    names = values.take(pa.array(code[firsts])).to_pylist()
    users = np.array([u.encode("utf-8") for u in names])
    if len(users) > 1 and not bool((users[1:] > users[:-1]).all()):
        raise SnapshotRefused(f"{info.key}: rows are not sorted by user_id (or a user's rows are split)")
    rank = table["rank"].to_numpy()
    if len(rank) and not bool((np.diff(rank)[np.diff(code) == 0] > 0).all()):
        raise SnapshotRefused(f"{info.key}: a user's rows are not in rank order")
    return _Part(users, np.append(firsts, len(code)).astype(np.int64) + offset)


def _coldstart(store: ObjectStore, info: PartInfo) -> dict[str, Hit]:
    table = _fetch(store, info, ()).sort_by([("segment", "ascending"), ("rank", "ascending")])
    out: dict[str, Hit] = {}
    for seg, item, score in zip(
        table["segment"].to_pylist(), table["item_id"].to_pylist(), table["score"].to_pylist(), strict=True
    ):
        hit = out.setdefault(seg, Hit([], [], SOURCES[1]))
        hit.items.append(item)
        hit.scores.append(round(float(score), 6))
    return out
