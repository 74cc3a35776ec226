"""Channels: parallel lines of published snapshots in one store, each with its own live pointer.

The default channel is the store's root (``recs/_live.json``, ``recs/ds=...``): today's layout, so every
reader of a store keeps working. Channel ``c`` is the same layout under ``channels/c/``; publish, validate,
retention and rollback run on it unchanged, through a store opened at that prefix. An A/B variant serves one
channel (``nightrec.serving.experiments``).
"""

from __future__ import annotations

from nightrec import settings
from nightrec.io.store import ObjectStore, StoreError, open_store
from schemas.manifest import CHANNEL_NAME as NAME
from schemas.manifest import CHANNELS_PREFIX as PREFIX
from schemas.manifest import DEFAULT_CHANNEL

__all__ = ["DEFAULT_CHANNEL", "NAME", "PREFIX", "channel_names", "channel_url", "open_channel"]


def channel_url(store_url: str, channel: str) -> str:
    """The URL of ``channel``'s store inside the store at ``store_url`` (:func:`nightrec.settings.channel_url`),
    a bad name refused as a store error."""
    try:
        return settings.channel_url(store_url, channel)
    except ValueError as e:
        raise StoreError(str(e)) from None


def open_channel(store_url: str, channel: str = DEFAULT_CHANNEL) -> ObjectStore:
    return open_store(channel_url(store_url, channel))


def channel_names(store: ObjectStore) -> list[str]:
    """The channels of the store at its root with a live pointer, besides the default one."""
    from nightrec.publish.pointer import POINTER_KEY

    tail = f"/{POINTER_KEY}"
    found = {
        key[len(PREFIX) + 1 : -len(tail)]
        for key in store.list(f"{PREFIX}/")
        if key.endswith(tail) and key.count("/") == POINTER_KEY.count("/") + 2
    }
    return sorted(found)
