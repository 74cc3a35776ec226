"""Per-epoch training checkpoints that survive a kill, and the fault points the kill tests use.

A checkpoint is written whole to a temp file in the same folder, fsynced, then ``os.replace``d over the
previous one, so the path holds either the previous complete checkpoint or the new one, never a torn mix. The
file starts with a magic line and the SHA-256 of the payload: a file truncated or corrupted after the rename
(disk full, a copy gone wrong) fails the check and is never handed to ``torch.load``.

The path is keyed by model name, run date and a fingerprint of the inputs and hyperparameters, so another
night, or the same night with changed inputs, starts fresh instead of resuming a stale state.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import torch

from nightrec import faults

log = logging.getLogger(__name__)

_MAGIC = b"nightrec-checkpoint-v1\n"
_DIGEST_LEN = 64  # hex SHA-256
FAULT_ENV = faults.FAULT_ENV  # re-exported for the tests


@dataclass
class FitState:
    """What the epoch loop carries from one epoch to the next, and so what a checkpoint must hold."""

    epoch: int = 0  # last completed epoch
    history: list[dict] = field(default_factory=list)
    best: tuple[float, ...] | None = None
    best_state: dict | None = None
    best_epoch: int = 0
    stale: int = 0
    last_finite: float | None = None


def save_fit(path: Path, name: str, n_train: int, s: FitState, model, opt, gen, device) -> None:
    """Checkpoint the epoch loop: its state, the weights, the optimizer and every RNG it draws from."""
    # vars, not asdict: asdict deep-copies every tensor of the best weights.
    fields = dict(vars(s)) | {"best_state": None if s.best_epoch == s.epoch else s.best_state}
    rng = {"batches": gen.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(device)
    state = {"name": name, "n_train": n_train, "fit": fields, "rng": rng}
    state |= {"model": model.state_dict(), "optimizer": opt.state_dict()}
    save(path, state)


def resume_fit(path: Path, name: str, n_train: int, model, opt, gen, device) -> FitState | None:
    """Restore model, optimizer and RNG from ``path``; None (fresh start) when there is no usable one."""
    return restore_fit(load(path), path, name, n_train, model, opt, gen, device)


def restore_fit(
    state: dict | None, path: Path, name: str, n_train: int, model, opt, gen, device
) -> FitState | None:
    """:func:`resume_fit` from a checkpoint already loaded from ``path`` (by rank 0, for every rank)."""
    if state is None:
        return None
    if (state.get("name"), state.get("n_train")) != (name, n_train):
        log.warning("ignoring checkpoint %s: it belongs to another training (%s)", path, state.get("name"))
        return None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["rng"]["batches"])
    torch.set_rng_state(state["rng"]["torch"])  # dropout draws from the global generator
    if device.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"], device)
    s = FitState(**state["fit"])
    if s.best_state is None:  # saved by the best epoch itself: the current weights are the best ones
        s.best_state = copy.deepcopy(model.state_dict())
    log.info("%s: resuming from %s after epoch %d", name, path, s.epoch)
    return s


def fingerprint(*parts: object) -> str:
    """A short stable hash of JSON-able parts (input fingerprints, config, train settings)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def checkpoint_path(root: str | Path, model_name: str, ds: date | str, key: str) -> Path:
    """``<root>/<model_name>/<ds>-<key>.pt``."""
    day = ds.isoformat() if isinstance(ds, date) else str(ds)
    return Path(root) / model_name / f"{day}-{key}.pt"


def save(path: Path, state: dict) -> None:
    """Write ``state`` atomically: temp file in the same folder, fsync, ``os.replace``, fsync the folder."""
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(_MAGIC + digest + b"\n")
        half = len(payload) // 2
        f.write(payload[:half])
        f.flush()
        faults.fault("checkpoint.mid_write")  # a kill here must leave the previous checkpoint intact
        f.write(payload[half:])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # The rename itself is durable only once the folder entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: Path) -> dict | None:
    """The checkpoint at ``path``, or None when there is none or it fails its integrity check.

    Temp files left by a write that was killed are removed; they are never read.
    """
    for tmp in path.parent.glob(f".{path.name}.tmp-*") if path.parent.exists() else ():
        log.warning("removing the partial checkpoint %s left by a killed write", tmp)
        tmp.unlink(missing_ok=True)
    if not path.exists():
        return None
    data = path.read_bytes()
    head = len(_MAGIC) + _DIGEST_LEN + 1
    payload = data[head:]
    digest = data[len(_MAGIC) : head - 1]
    if not data.startswith(_MAGIC) or hashlib.sha256(payload).hexdigest().encode() != digest:
        log.warning("ignoring checkpoint %s: it fails its checksum (torn or corrupted); starting fresh", path)
        return None
    # weights_only=False: the state holds RNG states, history rows and optimizer states, written by us.
    return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)


def remove(path: Path) -> None:
    """Delete the checkpoint and any partial writes of it (once the model is registered)."""
    path.unlink(missing_ok=True)
    if path.parent.exists():
        for tmp in path.parent.glob(f".{path.name}.tmp-*"):
            tmp.unlink(missing_ok=True)
