"""The live pointer ``recs/_live.json``: moved by compare-and-swap, forward only, to complete snapshots only.

Readers follow nothing else, so every guarantee of the publish protocol rests on three rules here:
1. a flip first checks that every part the manifest names exists with its recorded size;
2. the write is conditional on what was read (If-None-Match when absent, If-Match on its etag otherwise);
3. ``(ds, generation)`` never decreases except through ``allow_older`` or an explicit ``rollback``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from nightrec.errors import NightrecError
from nightrec.io.store import KeyNotFound, ObjectStore, PreconditionFailed, StoreError
from nightrec.publish import snapshot
from schemas.manifest import LivePointer, Manifest

log = logging.getLogger(__name__)

POINTER_KEY = f"{snapshot.RECS_PREFIX}/_live.json"


class PointerConflict(NightrecError):
    """The requested move is not allowed (backwards without ``allow_older``, or nothing to roll back to)."""


class Superseded(NightrecError):
    """Another run moved the pointer first; this run's snapshot stays published but not live."""

    def __init__(self, by_run_id: str, live_key: str):
        self.by_run_id, self.live_key = by_run_id, live_key
        super().__init__(f"superseded by run {by_run_id}: the live pointer now names {live_key}")


class SnapshotInvalid(NightrecError):
    """A snapshot's parts do not match its manifest (missing, wrong size, wrong checksum or row count)."""


def read_live(store: ObjectStore) -> tuple[LivePointer, str] | None:
    """The live pointer and its etag (for a later conditional write), or None before the first publish."""
    try:
        data, etag = store.get_with_etag(POINTER_KEY)
    except KeyNotFound:
        return None
    return LivePointer.from_json(data), etag


def check_parts_present(store: ObjectStore, manifest: Manifest) -> None:
    """Raise ``SnapshotInvalid`` unless every part (and the cold-start lists) exists with the size the manifest
    records."""
    bad = []
    for part in [*manifest.parts, *([manifest.coldstart] if manifest.coldstart else [])]:
        info = store.head(part.key)
        if info is None or info.size != part.bytes:
            bad.append(
                f"{part.key}: " + ("missing" if info is None else f"{info.size} bytes, expected {part.bytes}")
            )
    if bad:
        raise SnapshotInvalid(
            f"snapshot ds={manifest.ds} run={manifest.run_id} in {store.url} is incomplete: "
            + "; ".join(bad[:5])
        )


def _new_pointer(manifest: Manifest, manifest_key: str, previous: str | None) -> LivePointer:
    return LivePointer(
        manifest_key=manifest_key,
        ds=manifest.ds,
        generation=manifest.generation,
        run_id=manifest.run_id,
        flipped_at=datetime.now(UTC),
        previous=previous,
    )


def _swap(store: ObjectStore, new: LivePointer, etag: str | None, *, attempts: int = 3) -> LivePointer:
    """Write ``new`` if the pointer is still at ``etag`` (absent when None), resolving ambiguous outcomes.

    A write the server applied but whose response was lost surfaces as an error (or as 412 on a retry);
    either way a re-read that shows our run means success. Anything else holding the pointer won the race.
    """
    for attempt in range(1, attempts + 1):
        try:
            if etag is None:
                store.put_if(POINTER_KEY, new.to_json(), if_none_match=True)
            else:
                store.put_if(POINTER_KEY, new.to_json(), if_match=etag)
            return new
        except PreconditionFailed:
            if (own := _own_pointer(store, new)) is not None:
                return own
            now = read_live(store)
            raise Superseded(
                now[0].run_id if now else "<none>", now[0].manifest_key if now else "-"
            ) from None
        except (StoreError, OSError) as e:
            if (own := _own_pointer(store, new)) is not None:
                return own
            if attempt == attempts:
                raise
            log.warning(
                "pointer write failed (%s); attempt %d of %d, retrying the same swap", e, attempt, attempts
            )
    raise AssertionError("unreachable")


def _own_pointer(store: ObjectStore, new: LivePointer) -> LivePointer | None:
    now = read_live(store)
    if now is not None and now[0].run_id == new.run_id and now[0].manifest_key == new.manifest_key:
        log.info("pointer write was ambiguous; the live pointer already names run %s", new.run_id)
        return now[0]
    return None


def flip_live(
    store: ObjectStore, manifest: Manifest, manifest_key: str, *, allow_older: bool = False
) -> LivePointer:
    """Make a complete snapshot live with one conditional write of ``recs/_live.json``.

    Args:
        store: The object store holding the snapshot.
        manifest: The snapshot's manifest (as returned by ``snapshot.write_snapshot``).
        manifest_key: Where that manifest lives in the store.
        allow_older: Permit moving to a lower ``(ds, generation)`` than the live one (a deliberate backfill).

    Returns:
        The pointer now live (ours; idempotent when it already names this manifest).

    Raises:
        SnapshotInvalid: a part is missing or has the wrong size.
        PointerConflict: the live snapshot is newer and ``allow_older`` is False.
        Superseded: another run holds or took the pointer for the same or a later ``(ds, generation)``.
    """
    check_parts_present(store, manifest)
    if store.head(manifest_key) is None:
        raise SnapshotInvalid(f"manifest {manifest_key} does not exist in {store.url}")
    current = read_live(store)
    if current is None:
        return _swap(store, _new_pointer(manifest, manifest_key, None), None)
    live, etag = current
    if live.manifest_key == manifest_key:
        return live
    if manifest.order < live.order and not allow_older:
        raise PointerConflict(
            f"refusing to move the live pointer back from ds={live.ds} generation={live.generation} "
            f"(run {live.run_id}) to ds={manifest.ds} generation={manifest.generation}; "
            "pass allow_older for a backfill"
        )
    if manifest.order == live.order and not allow_older:
        raise Superseded(live.run_id, live.manifest_key)
    return _swap(store, _new_pointer(manifest, manifest_key, live.manifest_key), etag)


def _published(store: ObjectStore) -> list[tuple[Manifest, str]]:
    """Every published snapshot with its manifest key, oldest first in ``(ds, generation, created_at)``."""
    found = [(snapshot.load_manifest(store, k), k) for k in snapshot.list_manifests(store)]
    return sorted(found, key=lambda mk: (*mk[0].order, mk[0].created_at))


def rollback(store: ObjectStore, to_manifest_key: str | None = None) -> LivePointer:
    """Move the live pointer back to an earlier snapshot with a conditional write.

    Args:
        store: The object store.
        to_manifest_key: The manifest to make live; default: the pointer's ``previous``.

    Returns:
        The new live pointer. Its ``previous`` is the newest snapshot older than the target, so a second
        rollback goes further back rather than forward again.

    Raises:
        PointerConflict: nothing is live, or there is no earlier snapshot.
        SnapshotInvalid: the target's parts are incomplete.
        Superseded: the pointer moved while rolling back.
    """
    current = read_live(store)
    if current is None:
        raise PointerConflict(f"nothing is live in {store.url}: nothing to roll back")
    live, etag = current
    target_key = to_manifest_key or live.previous
    if target_key is None:
        raise PointerConflict(
            f"the live snapshot {live.manifest_key} has no previous snapshot to roll back to"
        )
    target = snapshot.load_manifest(store, target_key)
    check_parts_present(store, target)
    older = [k for m, k in _published(store) if m.order < target.order]
    pointer = _swap(store, _new_pointer(target, target_key, older[-1] if older else None), etag)
    log.warning("rolled back the live pointer from %s to %s", live.manifest_key, target_key)
    return pointer


def apply_retention(
    store: ObjectStore, keep: int, *, orphan_grace: timedelta = timedelta(hours=1)
) -> list[str]:
    """Delete old snapshots: keep the live one, its ``previous`` and the newest ``keep`` others.

    A ``run=`` folder without a manifest (a failed or killed publish) is an orphan; it is deleted when its
    newest object is older than the newest manifest and than ``orphan_grace``, so a publish in progress is
    left alone.

    Args:
        store: The object store.
        keep: How many snapshots to keep besides the live one.
        orphan_grace: Minimum age of an orphan before it is reaped.

    Returns:
        The ``run=`` prefixes deleted.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, got {keep}")
    current = read_live(store)
    protected = {_folder(current[0].manifest_key), _folder(current[0].previous or "")} if current else set()
    published = _published(store)
    newest_others = [k for _, k in reversed(published) if _folder(k) not in protected][:keep]
    protected |= {_folder(k) for k in newest_others}
    with_manifest = {_folder(k) for _, k in published}
    newest_manifest = max(
        (i.modified for _, k in published if (i := store.head(k)) and i.modified), default=None
    )
    by_folder: dict[str, list[str]] = {}
    for key in store.list(f"{snapshot.RECS_PREFIX}/ds="):
        if "/run=" in key:
            by_folder.setdefault(_folder(key), []).append(key)
    doomed = []
    for folder, keys in sorted(by_folder.items()):
        if folder in protected:
            continue
        if folder not in with_manifest and not _stale_orphan(store, keys, newest_manifest, orphan_grace):
            continue
        # The manifest goes first, alone: a half-deleted snapshot must never look complete.
        store.delete([k for k in keys if k.endswith("/manifest.json")])
        store.delete([k for k in keys if not k.endswith("/manifest.json")])
        doomed.append(folder)
    if doomed:
        log.info("retention deleted %d snapshot folder(s): %s", len(doomed), doomed)
    return doomed


def _folder(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/" if "/" in key else ""


def _stale_orphan(
    store: ObjectStore, keys: list[str], newest_manifest: datetime | None, grace: timedelta
) -> bool:
    if newest_manifest is None:
        return False
    modified = [info.modified for k in keys if (info := store.head(k)) is not None and info.modified]
    latest = max(modified, default=None)
    return latest is not None and latest <= newest_manifest and datetime.now(UTC) - latest >= grace
