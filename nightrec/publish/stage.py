"""The publish stage: validated lake lists -> snapshot in the object store -> conditional pointer flip.

Publish trusts nothing it is handed: it re-reads the recs gate's verdict from the lake and checks that the
verdict was given on exactly the lists now in the partition (same marker fingerprint), so a partition rewritten
after validation, or never validated, cannot go live.
"""

from __future__ import annotations

import json
import logging
from datetime import date

from nightrec import faults, registry
from nightrec.errors import GateFailed, StageInputMissing
from nightrec.io import lake
from nightrec.io.lake import VERDICT as VALIDATION
from nightrec.io.store import StoreError, open_store, probe_conditional_writes
from nightrec.publish import diff, pointer, snapshot
from nightrec.scoring.stage import META
from nightrec.settings import Settings
from schemas.results import Promotion, Publication, RuleFailure

log = logging.getLogger(__name__)


def validated_recs(settings: Settings, ds: date) -> tuple[dict, dict]:
    """The recs partition's (validation verdict, precompute metadata), refusing anything not proven good.

    Raises:
        StageInputMissing: no complete recs partition, or it was never validated.
        GateFailed: the verdict is a failure, or it judged other lists than those now in the partition.
    """
    path = lake.require_partition(settings.lake, settings.recs_table, ds)
    marker = lake.read_marker(path) or {}
    verdict_file = path / VALIDATION
    if not verdict_file.exists():
        raise StageInputMissing(
            f"{path} has no {VALIDATION}: the lists were never validated; run validate_recs before publish"
        )
    verdict = json.loads(verdict_file.read_text())
    if not verdict.get("success"):
        raise GateFailed(
            "recommendations",
            [RuleFailure(rule="validate_recs verdict was a failure")],
            verdict.get("data_docs"),
            str(verdict_file),
        )
    if verdict.get("recs_fingerprint") != marker.get("fingerprint"):
        raise GateFailed(
            "recommendations",
            [
                RuleFailure(
                    rule="the verdict judged other lists (fingerprint mismatch: the partition was "
                    "rewritten after validation); re-run validate_recs"
                )
            ],
            verdict.get("data_docs"),
            str(verdict_file),
        )
    meta_file = path / META
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    return verdict, meta


def publish_recs(
    settings: Settings, ds: date, run_id: str, promotion: Promotion | None = None
) -> Publication:
    """Write the validated lists of ``ds`` as a snapshot, make it live, then apply retention.

    A date older than the live snapshot's is published as a snapshot but not made live (the pointer only moves
    forward); ``live`` in the result says which happened. ``promotion`` (the night's gate decision, when this
    process made it) is kept in the manifest's ``extra``.
    """
    verdict, meta = validated_recs(settings, ds)
    store = open_store(settings.store, multipart_mb=settings.publish.multipart_mb)
    probe_conditional_writes(store)
    models = meta.get("models", {})
    report_key = _upload_report(store, settings, ds, run_id)
    extra = {"promotion": promotion.model_dump(mode="json")} if promotion else {}
    manifest = snapshot.write_snapshot(
        lake.partition_path(settings.lake, settings.recs_table, ds),
        store,
        ds=ds,
        run_id=run_id,
        shard_count=settings.publish.shard_count,
        meta={
            "top_k": settings.scoring.top_k,
            "policy": meta.get("policy", {}),
            "models": models,
            "mlflow_run_ids": {name: ref.get("run_id", "") for name, ref in models.items()},
            "input_fingerprints": {k: v for k, v in meta.get("input_fingerprints", {}).items() if v},
            "validation": {k: verdict.get(k) for k in ("success", "suites", "data_docs")},
            "code_version": registry.code_label(),
            "extra": extra | ({"report": report_key} if report_key else {}),
        },
    )
    key = snapshot.manifest_key(ds, run_id)
    faults.fault("publish.before_flip")  # the snapshot is complete, the pointer still names the old one
    try:
        live = pointer.flip_live(store, manifest, key)
    except pointer.PointerConflict as e:
        # An older date (a backfill, or a re-run of a past night) is kept as a snapshot, but the pointer only
        # moves forward: readers keep the newer lists. `nightrec rollback --to KEY` can still make it live.
        log.warning("snapshot %s published but not made live: %s", key, e)
        return _result(settings, key, manifest, live=False, previous=None)
    changes = None
    if live.previous:
        try:
            old = snapshot.load_manifest(store, live.previous)
            changes = diff.diff_snapshots(store, manifest, old)
        except (ValueError, StoreError) as e:  # a summary must never fail a publish that already happened
            log.warning("could not compare with the previous snapshot: %s", e)
    deleted = pointer.apply_retention(store, settings.publish.retention)
    log.info("live pointer now at %s (generation %d)", key, live.generation)
    if settings.publish.redis_url:
        # After the store's flip: Redis follows the store, never leads it. A failure raises (the task retries;
        # the store side of a retry is idempotent) and leaves Redis's own live version where it was.
        from nightrec.publish import redis_sink

        redis_sink.load(
            settings.publish.redis_url, store, manifest, key, prefix=settings.publish.redis_prefix
        )
    return _result(
        settings, key, manifest, live=True, previous=live.previous, deleted=deleted, changes=changes
    )


def _upload_report(store, settings: Settings, ds: date, run_id: str) -> str | None:
    """The recs gate's night report, beside the snapshot's parts (invisible, as they are, until the manifest)."""
    local = lake.partition_path(settings.lake, settings.recs_table, ds) / lake.NIGHT_REPORT
    if not local.exists():
        return None
    key = f"{snapshot.run_prefix(ds, run_id)}report.html"
    store.put_file(key, local)
    return key


def _result(
    settings: Settings, key: str, manifest, *, live: bool, previous, deleted=(), changes=None
) -> Publication:
    return Publication(
        store=settings.store,
        manifest_key=key,
        pointer_key=pointer.POINTER_KEY,
        live=live,
        generation=manifest.generation,
        previous=previous,
        counts=manifest.counts,
        deleted=list(deleted),
        changes=changes,
    )
