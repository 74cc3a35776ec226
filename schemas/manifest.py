"""The two documents of the publish protocol (ARCHITECTURE): a snapshot's manifest and the live pointer.

Both are JSON documents in the object store; ``to_json``/``from_json`` are the only (de)serialisers, so a
reader and a writer can never disagree on the format.
"""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field

# Channels: parallel lines of snapshots in one store (nightrec.publish.channels). The default one is the
# store's root; a name is also a path segment and a Redis key part, hence the narrow alphabet.
DEFAULT_CHANNEL = "default"
CHANNEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # channels, experiments and variants alike
CHANNELS_PREFIX = "channels"  # channel c's snapshots and pointer live under channels/<c>/ of the store


class _Doc(BaseModel):
    # Unknown fields are ignored: a reader on older code (say, after a code rollback) must still follow a
    # pointer or manifest written by newer code.
    model_config = ConfigDict(frozen=True, extra="ignore")

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes | str):
        return cls.model_validate_json(data)


class PartInfo(_Doc):
    """One Parquet part of a snapshot: its key (relative to the store root), row count, checksum and size."""

    key: str
    rows: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Manifest(_Doc):
    """Everything a reader or an auditor needs to trust a snapshot; written after all of its parts."""

    ds: date
    run_id: str = Field(min_length=1)
    generation: int = Field(ge=1, description="1 + the highest generation already published for ds.")
    created_at: datetime
    top_k: int = Field(ge=0)
    counts: dict[str, int] = Field(description="users, rows, model_users, fallback_users, short_lists, ...")
    parts: list[PartInfo] = Field(description="Part i holds the users whose hash bucket is i.")
    coldstart: PartInfo | None = Field(
        default=None,
        description="The cold-start lists (schemas.tables.COLDSTART): what a user without a list of their own "
        "is served. None in snapshots published before they were.",
    )
    policy: dict = Field(
        default_factory=dict,
        description="The policy that made the lists: kind (learned, popularity, ease), name, params and its "
        "nightrec-policy version in the MLflow registry.",
    )
    models: dict[str, dict] = Field(
        default_factory=dict, description="name -> {version, run_id}; empty when a baseline made the lists"
    )
    mlflow_run_ids: dict[str, str] = Field(default_factory=dict)
    input_fingerprints: dict[str, str] = Field(default_factory=dict)
    validation: dict = Field(default_factory=dict, description="The recs gate's verdict: success + summary.")
    code_version: str = "unknown"
    extra: dict = Field(default_factory=dict)

    @property
    def order(self) -> tuple[date, int]:
        """The key the live pointer only ever moves forward in."""
        return (self.ds, self.generation)


class LivePointer(_Doc):
    """The content of ``recs/_live.json``: which manifest readers follow, and the one before it."""

    manifest_key: str
    ds: date
    generation: int = Field(ge=1)
    run_id: str
    flipped_at: datetime
    previous: str | None = None

    @property
    def order(self) -> tuple[date, int]:
        return (self.ds, self.generation)
