"""Reading what is live: per-user lookups for serving, and the invariant check tests run after every fault.

Both start from ``recs/_live.json`` and nothing else, so a reader never sees a snapshot that was not flipped.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections import OrderedDict

import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.io.store import KeyNotFound, ObjectStore
from nightrec.publish import pointer, snapshot
from schemas.manifest import Manifest

_FIELDS = ("rank", "item_id", "score", "source")


class _Part:
    """One part indexed by user: parts are sorted by (user_id, rank), so a user is one contiguous slice."""

    def __init__(self, table: pa.Table):
        self.table = table.select(list(_FIELDS))
        self.slices: dict[str, tuple[int, int]] = {}
        users = table.column("user_id").to_pylist()
        start = 0
        for i in range(1, len(users) + 1):
            if i == len(users) or users[i] != users[start]:
                self.slices[users[start]] = (start, i - start)
                start = i

    def rows(self, user_id: str) -> list[dict]:
        where = self.slices.get(user_id)
        return self.table.slice(*where).to_pylist() if where else []


class LiveRecs:
    """Look up a user's live list: ``_live.json`` -> manifest -> the one part holding the user.

    Parts and manifests are immutable, so they are cached by key (parts in a bounded LRU); the pointer is
    re-read at most every ``pointer_ttl_s`` seconds (0: on every call).
    """

    def __init__(self, store: ObjectStore, *, pointer_ttl_s: float = 0.0, max_cached_parts: int = 16):
        self.store, self.pointer_ttl_s, self.max_cached_parts = store, pointer_ttl_s, max_cached_parts
        self._manifest: tuple[str, Manifest] | None = None
        self._read_at = float("-inf")
        self._parts: OrderedDict[str, _Part] = OrderedDict()

    def manifest(self, *, refresh: bool = False) -> Manifest | None:
        """The live manifest (None before the first publish)."""
        if refresh or time.monotonic() - self._read_at >= self.pointer_ttl_s:
            live = pointer.read_live(self.store)
            self._read_at = time.monotonic()
            if live is None:
                self._manifest = None
            elif self._manifest is None or self._manifest[0] != live[0].manifest_key:
                key = live[0].manifest_key
                self._manifest = (key, snapshot.load_manifest(self.store, key))
        return self._manifest[1] if self._manifest else None

    def _part(self, key: str) -> _Part:
        if key in self._parts:
            self._parts.move_to_end(key)
            return self._parts[key]
        part = _Part(pq.read_table(io.BytesIO(self.store.get_bytes(key))))
        self._parts[key] = part
        if len(self._parts) > self.max_cached_parts:
            self._parts.popitem(last=False)
        return part

    def recs(self, user_id: str) -> list[dict]:
        """The user's live list as dicts with rank, item_id, score and source, best first ([] if unknown).

        Raises:
            KeyNotFound: the part vanished twice in a row (retention raced this read and the pointer moved).
        """
        for attempt in range(2):
            manifest = self.manifest(refresh=attempt > 0)
            if manifest is None:
                return []
            part = manifest.parts[snapshot.user_bucket(user_id, len(manifest.parts))]
            try:
                return self._part(part.key).rows(user_id)
            except KeyNotFound:
                # Retention may delete a snapshot just after the pointer left it: follow the pointer again.
                if attempt:
                    raise
        raise AssertionError("unreachable")


def verify_live(store: ObjectStore) -> Manifest:
    """Check the live snapshot end to end: pointer -> manifest -> every part's bytes, sha256 and row count.

    Returns:
        The live manifest.

    Raises:
        PointerConflict: nothing is live.
        SnapshotInvalid: the manifest disagrees with the pointer, or a part is missing or does not match.
    """
    live = pointer.read_live(store)
    if live is None:
        raise pointer.PointerConflict(f"nothing is live in {store.url}")
    ptr = live[0]
    manifest = snapshot.load_manifest(store, ptr.manifest_key)
    if (manifest.ds, manifest.generation, manifest.run_id) != (ptr.ds, ptr.generation, ptr.run_id):
        raise pointer.SnapshotInvalid(f"pointer {ptr} disagrees with manifest {ptr.manifest_key}")
    files = [*manifest.parts, *([manifest.coldstart] if manifest.coldstart else [])]
    problems = [p for part in files if (p := _check_part(store, part))]
    total = sum(part.rows for part in manifest.parts)
    if total != manifest.counts.get("rows"):
        problems.append(f"parts hold {total} rows, counts say {manifest.counts.get('rows')}")
    if problems:
        raise pointer.SnapshotInvalid(
            f"live snapshot {ptr.manifest_key} in {store.url}: " + "; ".join(problems)
        )
    return manifest


def _check_part(store: ObjectStore, part) -> str | None:
    try:
        data = store.get_bytes(part.key)
    except KeyNotFound:
        return f"{part.key} missing"
    if len(data) != part.bytes or hashlib.sha256(data).hexdigest() != part.sha256:
        return f"{part.key} checksum/size mismatch ({len(data)} bytes, expected {part.bytes})"
    rows = pq.read_metadata(io.BytesIO(data)).num_rows
    return None if rows == part.rows else f"{part.key} has {rows} rows, manifest says {part.rows}"
