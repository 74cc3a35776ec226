"""The optional Redis sink: the live snapshot's lists loaded into Redis, made live by one pointer key.

Many applications already read from Redis. The same all-or-nothing rule as the object store holds: every key
of a version is written first, under that version's own names; the load is checked against the manifest;
then one conditional transaction moves ``<prefix>:<channel>:live`` to the new version (and the one it
replaces to ``...:previous``). A reader never sees half a version. Older versions are deleted afterwards.

Keys (``prefix`` defaults to ``nightrec``, the version is ``<ds>.g<generation>.<run_id>``)::

    nightrec:default:live                          -> "2026-11-22.g1.run-abc"
    nightrec:default:previous                      -> the version before it (a rollback target)
    nightrec:default:2026-11-22.g1.run-abc:u:<user_id>         -> JSON list, best first: item_id, rank, score, source
    nightrec:default:2026-11-22.g1.run-abc:coldstart:<segment> -> the same, for users without a list ('' = global)
    nightrec:default:2026-11-22.g1.run-abc:meta                -> JSON: manifest key, ds, generation, run_id, users

A reader does ``GET nightrec:default:live`` (cacheable for seconds) then ``GET ...:<version>:u:<user_id>``.
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.errors import NightrecError
from nightrec.io.store import ObjectStore
from nightrec.publish import snapshot
from nightrec.publish.channels import DEFAULT_CHANNEL
from schemas.manifest import Manifest

log = logging.getLogger(__name__)
BATCH = 5_000  # SETs per pipeline round trip


class RedisSinkFailed(NightrecError):
    """The lists could not be loaded into Redis; its live pointer still names the version it named before."""


@dataclass(frozen=True)
class RedisLoad:
    version: str
    users: int
    seconds: float
    previous: str | None
    deleted_keys: int


def version_of(manifest: Manifest) -> str:
    return f"{manifest.ds.isoformat()}.g{manifest.generation}.{manifest.run_id}"


def keys(prefix: str, channel: str) -> tuple[str, str]:
    """(live pointer key, previous pointer key)."""
    return f"{prefix}:{channel}:live", f"{prefix}:{channel}:previous"


def load(
    redis_url: str,
    store: ObjectStore,
    manifest: Manifest,
    manifest_key: str,
    *,
    prefix: str = "nightrec",
    channel: str = DEFAULT_CHANNEL,
    keep: int = 2,
) -> RedisLoad:
    """Load a snapshot into Redis and make it live there (see the module doc for the keys).

    Args:
        keep: Versions kept (the live one included); older ones are deleted after the flip.

    Raises:
        RedisSinkFailed: Redis unreachable, a write failed, or the load does not match the manifest (names
            what); Redis's live pointer is left as it was.
    """
    import redis

    t0 = time.perf_counter()
    version = version_of(manifest)
    base = f"{prefix}:{channel}:{version}"
    live_key, previous_key = keys(prefix, channel)
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=30)
        users = 0
        for _, part in snapshot.read_parts(
            store, manifest, ["user_id", "rank", "item_id", "score", "source"]
        ):
            users += _write_lists(client, f"{base}:u:", part, "user_id")
        if manifest.coldstart is not None:
            cold = pq.read_table(io.BytesIO(store.get_bytes(manifest.coldstart.key)))
            cold = cold.append_column("source", pa.array(["fallback"] * cold.num_rows, pa.string()))
            _write_lists(client, f"{base}:coldstart:", cold, "segment")
        if users != manifest.counts.get("users", users):
            raise RedisSinkFailed(
                f"Redis {redis_url}: loaded {users} users of {manifest_key}, the manifest says "
                f"{manifest.counts.get('users')}; the live version was not changed"
            )
        meta = {
            "manifest_key": manifest_key,
            "ds": manifest.ds.isoformat(),
            "generation": manifest.generation,
        }
        client.set(f"{base}:meta", orjson.dumps(meta | {"run_id": manifest.run_id, "users": users}))
        previous = _flip(client, live_key, previous_key, version)
        deleted = _retire(client, prefix, channel, keep=[version, previous] if keep >= 2 else [version])
    except redis.RedisError as e:
        raise RedisSinkFailed(
            f"Redis {redis_url}: {type(e).__name__}: {e}; its live version was not changed"
        ) from e
    out = RedisLoad(version, users, time.perf_counter() - t0, previous, deleted)
    log.info(
        "Redis %s: %s live (%d users, %.1f s, %d old keys deleted)",
        redis_url,
        version,
        users,
        out.seconds,
        deleted,
    )
    return out


def _write_lists(client, key_prefix: str, table, by: str) -> int:
    """One key per ``by`` value: the JSON list of its rows, best first (parts are sorted by user, then rank)."""
    table = table.sort_by([(by, "ascending"), ("rank", "ascending")])
    ids = table[by].to_pylist()
    cols = [table[c].to_pylist() for c in ("item_id", "rank", "score", "source")]
    pipe, pending, groups, start = client.pipeline(transaction=False), 0, 0, 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[start]:
            rows = [
                {"item_id": cols[0][j], "rank": cols[1][j], "score": cols[2][j], "source": cols[3][j]}
                for j in range(start, i)
            ]
            pipe.set(key_prefix + ids[start], orjson.dumps(rows))
            groups, pending, start = groups + 1, pending + 1, i
            if pending >= BATCH:
                pipe.execute()
                pending = 0
    if pending:
        pipe.execute()
    return groups


def _flip(client, live_key: str, previous_key: str, version: str) -> str | None:
    """Move the live pointer to ``version`` in one optimistic transaction (retried when another writer
    raced it); the version it replaced becomes ``previous``."""
    import redis

    for _ in range(10):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(live_key)
                old = pipe.get(live_key)
                old = old.decode() if old else None
                if old == version:  # a retried load of what is already live
                    pipe.reset()
                    prev = client.get(previous_key)
                    return prev.decode() if prev else None
                pipe.multi()
                pipe.set(live_key, version)
                if old:
                    pipe.set(previous_key, old)
                pipe.execute()
                return old
            except redis.WatchError:
                continue
    raise RedisSinkFailed(f"the live pointer {live_key} kept changing under us; not flipped")


def _retire(client, prefix: str, channel: str, keep: list[str | None]) -> int:
    """Delete every version of the channel but ``keep`` (after the flip, so nothing live goes)."""
    kept = {v for v in keep if v}
    deleted, batch = 0, []
    for key in client.scan_iter(match=f"{prefix}:{channel}:*", count=10_000):
        name = key.decode()
        version = name[len(f"{prefix}:{channel}:") :].split(":", 1)[0]
        if version in ("live", "previous") or version in kept:
            continue
        batch.append(key)
        if len(batch) >= BATCH:
            deleted += client.unlink(*batch)
            batch = []
    if batch:
        deleted += client.unlink(*batch)
    return deleted


def read(
    redis_url: str, user_id: str, *, prefix: str = "nightrec", channel: str = DEFAULT_CHANNEL
) -> list[dict]:
    """A user's live list from Redis, as an application would read it ([] when the user has none)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    version = client.get(keys(prefix, channel)[0])
    if version is None:
        return []
    data = client.get(f"{prefix}:{channel}:{version.decode()}:u:{user_id}")
    return orjson.loads(data) if data else []
