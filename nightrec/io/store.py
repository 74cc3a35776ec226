"""Object stores for published snapshots: a local folder or S3 (any S3-compatible endpoint).

Both offer the same small interface, including a compare-and-swap ``put_if`` that the live pointer relies on.
They differ in one property only, how the swap is enforced: ``os.replace`` under a file lock locally, S3's
conditional ``If-Match`` / ``If-None-Match`` headers remotely.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from filelock import FileLock

from nightrec.errors import DiskFull, NightrecError
from nightrec.io import disk

log = logging.getLogger(__name__)

_LOCK_SUFFIX = ".lock"


class StoreError(NightrecError):
    """A store operation failed; names the store, the key and (for S3) the bucket and HTTP code."""

    def __init__(
        self, message: str, *, bucket: str | None = None, key: str | None = None, code: int | None = None
    ):
        self.bucket, self.key, self.code = bucket, key, code
        super().__init__(message)


class KeyNotFound(StoreError):
    def __init__(self, store_url: str, key: str):
        self.store_url = store_url
        super().__init__(f"no object {key!r} in store {store_url}", key=key, code=404)


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed (If-Match) or already existed (If-None-Match)."""

    def __init__(self, url: str, key: str):
        self.url = url
        super().__init__(
            f"conditional write of {key!r} in {url} failed: the object changed underneath", key=key
        )


@dataclass(frozen=True)
class ObjectInfo:
    etag: str
    size: int
    modified: datetime | None = None


class ObjectStore(Protocol):
    url: str

    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, local_path: str | Path) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_with_etag(self, key: str) -> tuple[bytes, str]: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def list(self, prefix: str) -> list[str]: ...
    def delete(self, keys: list[str]) -> None: ...
    def put_if(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str: ...


def open_store(
    url: str, *, max_attempts: int = 5, retry_mode: str = "standard", multipart_mb: int = 64
) -> ObjectStore:
    """Open the store a URL names.

    Args:
        url: ``s3://bucket[/prefix]``, ``file:///abs/path`` or a plain local path.
        max_attempts: S3 only: retries after the first attempt (botocore's ``max_attempts``), with exponential
            backoff and jitter.
        retry_mode: S3 only: ``standard`` or ``adaptive`` (adds client-side rate limiting on throttling).
        multipart_mb: S3 only: files from this size up are uploaded as a multipart upload, in parts of a
            quarter of it (at least S3's 5 MiB minimum), several at once, each retried on its own.

    Returns:
        An ``S3Store`` or a ``LocalStore``.
    """
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        return S3Store(
            parsed.netloc,
            parsed.path.strip("/"),
            max_attempts=max_attempts,
            retry_mode=retry_mode,
            multipart_mb=multipart_mb,
        )
    if parsed.scheme == "file":
        return LocalStore(Path(unquote(parsed.netloc + parsed.path)))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path (len 1: a Windows drive letter)
        return LocalStore(Path(url))
    raise StoreError(f"unsupported store URL {url!r}: use s3://bucket/prefix, file:///path or a local path")


def check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StoreError(f"invalid store key {key!r}", key=key)
    if any(p.startswith(".") for p in parts):
        raise StoreError(
            f"invalid store key {key!r}: hidden names are reserved for temp and lock files", key=key
        )
    return key


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStore:
    """A folder as an object store: atomic writes (temp file + ``os.replace``); etag = sha256 of content."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _lock(self, path: Path) -> FileLock:
        return FileLock(str(path.parent / f".{path.name}{_LOCK_SUFFIX}"), timeout=60)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            reason = disk.no_space_reason(e)
            if reason is not None:
                raise DiskFull(str(path), reason) from e
            raise StoreError(f"writing {path} in {self.url} failed: {e}", key=str(path)) from e

    def put_bytes(self, key: str, data: bytes) -> None:
        self._write(self._path(key), data)

    def put_file(self, key: str, local_path: str | Path) -> None:
        # Whole-file read: a local copy gains nothing from streaming and keeps the write atomic in one place.
        self._write(self._path(key), Path(local_path).read_bytes())

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise KeyNotFound(self.url, key) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, sha256_hex(data)

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
            mtime = path.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        return ObjectInfo(sha256_hex(data), len(data), datetime.fromtimestamp(mtime, UTC))

    def list(self, prefix: str) -> list[str]:
        # Walk only the deepest folder the prefix names; S3 semantics: a plain string-prefix match on keys.
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if not name.startswith(".") and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            (path.parent / f".{path.name}{_LOCK_SUFFIX}").unlink(missing_ok=True)
            self._prune_empty(path.parent)

    def _prune_empty(self, folder: Path) -> None:
        while folder != self.root and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent

    def put_if(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """Compare-and-swap write; returns the new etag.

        Raises:
            PreconditionFailed: the object exists (``if_none_match``) or its etag is not ``if_match``.
        """
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(path):
            current = self.head(key)
            if if_none_match and current is not None:
                raise PreconditionFailed(self.url, key)
            if if_match is not None and (current is None or current.etag != if_match):
                raise PreconditionFailed(self.url, key)
            self._write(path, data)
        return sha256_hex(data)


class S3Store:
    """S3 or an S3-compatible endpoint via boto3's standard config chain (``AWS_ENDPOINT_URL`` included)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        max_attempts: int = 5,
        retry_mode: str = "standard",
        multipart_mb: int = 64,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        if not bucket:
            raise StoreError("an s3:// store URL needs a bucket: s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        config = Config(retries={"max_attempts": max_attempts, "mode": retry_mode})
        self.client = boto3.session.Session().client("s3", config=config)
        part = max(multipart_mb * 2**20 // 4, 5 * 2**20)  # S3 refuses parts under 5 MiB (but the last)
        self.transfer = TransferConfig(multipart_threshold=multipart_mb * 2**20, multipart_chunksize=part)

    def _key(self, key: str) -> str:
        return self._full(check_key(key))

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, op: str, key: str, *, conditional: bool = False):
        """Translate botocore errors into store errors that name the bucket, the key and the HTTP code."""
        try:
            yield
        except StoreError:
            raise
        except Exception as e:
            cause = e if hasattr(e, "response") else e.__context__  # upload_file wraps the ClientError
            response = getattr(cause, "response", None) or {}
            meta, code = response.get("ResponseMetadata", {}), response.get("Error", {}).get("Code")
            status = meta.get("HTTPStatusCode")
            # 409 ConditionalRequestConflict: a concurrent conditional write; NoSuchKey: If-Match on nothing.
            if conditional and (status == 412 or code in ("ConditionalRequestConflict", "NoSuchKey")):
                raise PreconditionFailed(self.url, key) from e
            if code == "NoSuchKey":
                raise KeyNotFound(self.url, key) from None
            what = (
                f"HTTP {status} {code} after {meta.get('RetryAttempts', 0) + 1} attempt(s)"
                if status
                else repr(e)
            )
            raise StoreError(
                f"S3 {op} of key {self._full(key)!r} in bucket {self.bucket!r} failed: {what}",
                bucket=self.bucket,
                key=self._full(key),
                code=status,
            ) from e

    def _log_retries(self, op: str, key: str, response: dict) -> None:
        if retries := response.get("ResponseMetadata", {}).get("RetryAttempts", 0):
            log.warning(
                "S3 %s s3://%s/%s succeeded after %d retries", op, self.bucket, self._full(key), retries
            )

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors("PutObject", key):
            resp = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        self._log_retries("PutObject", key, resp)

    def put_file(self, key: str, local_path: str | Path) -> None:
        with self._errors("upload", key):
            self.client.upload_file(str(local_path), self.bucket, self._key(key), Config=self.transfer)

    def get_bytes(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        with self._errors("GetObject", key):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return resp["Body"].read(), resp["ETag"]

    def head(self, key: str) -> ObjectInfo | None:
        try:
            with self._errors("HeadObject", key):
                resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except StoreError as e:
            if e.code == 404:  # HEAD has no body, so no NoSuchKey code: only the status says "absent"
                return None
            raise
        return ObjectInfo(resp["ETag"], resp["ContentLength"], resp.get("LastModified"))

    def list(self, prefix: str) -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=root + prefix
        )
        with self._errors("ListObjectsV2", prefix):
            return sorted(o["Key"][len(root) :] for page in pages for o in page.get("Contents", []))

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):  # the DeleteObjects batch limit
            batch = {"Objects": [{"Key": self._key(k)} for k in keys[i : i + 1000]], "Quiet": True}
            with self._errors("DeleteObjects", keys[i]):
                errors = self.client.delete_objects(Bucket=self.bucket, Delete=batch).get("Errors")
            if errors:
                first = errors[0]
                raise StoreError(
                    f"S3 DeleteObjects in bucket {self.bucket!r} failed for {len(errors)} key(s), first "
                    f"{first.get('Key')!r}: {first.get('Code')} {first.get('Message')}",
                    bucket=self.bucket,
                    key=first.get("Key"),
                )

    def put_if(
        self, key: str, data: bytes, *, if_match: str | None = None, if_none_match: bool = False
    ) -> str:
        """Compare-and-swap write with S3's conditional headers; returns the new ETag.

        Raises:
            PreconditionFailed: HTTP 412, or 409 ConditionalRequestConflict (a concurrent conditional write).
            StoreError: any other failure, naming bucket, key and HTTP code.
        """
        cond = {"IfNoneMatch": "*"} if if_none_match else {}
        if if_match is not None:
            cond["IfMatch"] = if_match
        with self._errors("PutObject", key, conditional=True):
            resp = self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **cond)
        self._log_retries("PutObject", key, resp)
        return resp["ETag"]


def probe_conditional_writes(store: ObjectStore) -> None:
    """Refuse a store that silently ignores conditional writes (rclone, s3rver, some emulators).

    Writes a probe key with ``if_none_match`` twice, then overwrites it with a stale ``if_match``; both second
    writes must be rejected. The probe key is deleted afterwards.

    Raises:
        StoreError: the store accepted a write it should have refused.
    """
    key = f"_probe/conditional-{uuid.uuid4().hex}"
    try:
        first = store.put_if(key, b"probe-1", if_none_match=True)
        _expect_refusal(
            store, key, "If-None-Match", lambda: store.put_if(key, b"probe-2", if_none_match=True)
        )
        store.put_if(key, b"probe-3", if_match=first)
        _expect_refusal(store, key, "If-Match", lambda: store.put_if(key, b"probe-4", if_match=first))
    finally:
        store.delete([key])


def _expect_refusal(store: ObjectStore, key: str, header: str, write) -> None:
    try:
        write()
    except PreconditionFailed:
        return
    raise StoreError(
        f"store {store.url} ignores conditional writes ({header} on {key!r} was accepted): the live pointer "
        "cannot be swapped safely there; use S3, a store enforcing If-Match/If-None-Match, or a local folder",
        key=key,
    )
