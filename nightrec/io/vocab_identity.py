"""What a model's indices mean: the digest of the vocabulary it was trained on, and the check that a night's
vocabulary still means the same.

Indices are assigned once, ever (``features.vocab``): a later vocabulary only appends. So a model trained on a
vocabulary of ``n`` values of a field can score any vocabulary whose first ``n`` indices hold the same values.
The digest is, per field, that size and a hash of the values in index order; the check recomputes the hash
over the night's first ``n`` indices. A vocabulary that was rebuilt (a lake wiped while the registry was kept,
a lake from before ids were stable) fails it, with the first index whose value moved.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from nightrec.io import lake
from schemas.tables import VOCAB

FIELDS = ("user_id", "item_id", "category", "segment")


class VocabularyMismatch(RuntimeError):
    """A model's indices do not mean the same values in the night's vocabulary."""


def _read(lake_root: str | Path, ds: date) -> pa.Table:
    path = lake.require_partition(lake_root, VOCAB.name, ds)
    return pads.dataset(str(path), format="parquet").to_table(columns=["field", "value", "idx"])


def _ordered(t: pa.Table, field: str) -> pa.Table:
    rows = t.filter(pc.equal(t["field"], field))
    return rows.sort_by("idx").select(["idx", "value"])


def _hash(rows: pa.Table) -> str:
    h = hashlib.sha256()
    for idx, value in zip(rows["idx"].to_pylist(), rows["value"].to_pylist(), strict=True):
        h.update(f"{idx}\x1f{value}\x1e".encode())
    return h.hexdigest()[:16]


def digest(lake_root: str | Path, ds: date) -> dict[str, dict]:
    """{field: {"size": values, "max_idx": largest index, "hash": of (idx, value) in index order}} of ``ds``."""
    t = _read(lake_root, ds)
    out = {}
    for field in FIELDS:
        rows = _ordered(t, field)
        out[field] = {
            "size": len(rows),
            "max_idx": int(pc.max(rows["idx"]).as_py() or 0) if len(rows) else 0,
            "hash": _hash(rows),
        }
    return out


def check(trained_on: dict | None, lake_root: str | Path, ds: date, what: str) -> None:
    """Refuse ``ds``'s vocabulary unless it extends ``trained_on`` (a :func:`digest`) with equal indices.

    ``trained_on`` None (a model from before digests were recorded): nothing to check against.

    Raises:
        VocabularyMismatch: names the model, the field, and the first index whose value differs.
    """
    if not trained_on:
        return
    t = _read(lake_root, ds)
    for field, want in trained_on.items():
        rows = _ordered(t, field)
        head = rows.filter(pc.less_equal(rows["idx"], want["max_idx"]))
        if len(head) == want["size"] and _hash(head) == want["hash"]:
            continue
        raise VocabularyMismatch(
            f"{what} was trained on a {field} vocabulary of {want['size']} values (indices up to "
            f"{want['max_idx']}), and the vocabulary of {ds} ({lake.partition_path(lake_root, VOCAB.name, ds)}) "
            f"does not keep them at the same indices: {len(head)} values there up to that index, "
            f"e.g. {_first_rows(head, 3)}. Its scores would belong to other {field}s. The vocabulary was "
            "rebuilt from scratch (a lake wiped while the MLflow registry was kept, or one from before ids "
            "were stable). Retrain on this lake (`nightrec run --force`), or point the night at the lake the "
            "model was trained on."
        )


def check_model(model, lake_root: str | Path, ds: date, what: str) -> None:
    """:func:`check` against the digest ``model`` carries (its ``vocab_digest`` stamp, set by the training
    stage; ``models.stamped``); None: nothing to check."""
    if model is not None:
        check(model.vocab_digest, lake_root, ds, what)


def _first_rows(rows: pa.Table, n: int) -> str:
    pairs = zip(rows["idx"].to_pylist()[:n], rows["value"].to_pylist()[:n], strict=True)
    return ", ".join(f"{i}={v!r}" for i, v in pairs) or "none"
