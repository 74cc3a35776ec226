"""Nightly precompute: every user's top-K, streamed in chunks and written to lake/recs/ds=... as it goes."""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from nightrec import faults
from nightrec.io import disk, lake
from nightrec.scoring import baselines, inputs, rules
from nightrec.scoring.policies import Policy
from nightrec.scoring.score import Scorer, ScoringConfig
from nightrec.settings import Settings
from schemas.arrow import to_arrow_schema
from schemas.results import ListsWritten
from schemas.tables import RECS


def chunk_table(users: inputs.UserTable, items: inputs.ItemTable, res) -> tuple[pa.Table, int]:
    b, k = res.items.shape
    valid = res.items >= 0
    user_ids = np.repeat(users.user_id, k)[valid.reshape(-1)]
    ranks = np.tile(np.arange(1, k + 1, dtype=np.int32), b)[valid.reshape(-1)]
    item_ids = items.item_id[res.items[valid]]
    source = np.where(np.repeat(res.fallback, k)[valid.reshape(-1)], "fallback", "model")
    tbl = pa.table(
        {
            "user_id": pa.array(user_ids, pa.string()),
            "rank": pa.array(ranks, pa.int32()),
            "item_id": pa.array(item_ids, pa.string()),
            "score": pa.array(res.scores[valid].astype(np.float64)),
            "source": pa.array(source, pa.string()),
        }
    )
    return tbl.cast(to_arrow_schema(RECS)), int((valid.sum(1) < k).sum())


def precompute(
    settings: Settings, ds: date, retrieval, ranking, fingerprint: str, policy: Policy | None = None
) -> ListsWritten:
    """Score every known user as of ``ds`` and write the RECS table; memory is bounded by the chunk size.

    ``retrieval``/``ranking`` are the learned models; a baseline ``policy`` (popularity, EASE) is refit on the
    lake of ``ds`` instead and scored by the same scorer, rules and fallback (``retrieval`` may then be None).
    ``scoring.engine = "spark"`` runs the learned models' scorer on Spark executors
    (nightrec.scoring.spark_scoring); a baseline is scored locally (it is one product per user).
    """
    baseline = policy is not None and policy.is_baseline
    if settings.scoring.engine == "spark" and not baseline:
        from nightrec.io.spark import get_spark
        from nightrec.scoring.spark_scoring import precompute_spark

        return precompute_spark(get_spark(settings.spark), settings, ds, retrieval, ranking, fingerprint)
    cfg = settings.features
    users = inputs.load_users(settings.lake, ds, "serve", cfg.history_len)
    items = inputs.load_items(settings.lake, ds, "serve")
    pairs = inputs.load_interactions(settings.lake, ds, None, ds, cfg, arrow=True)
    seen = inputs.build_seen(pairs, users, items)
    sc = settings.scoring
    night = night_rules(settings, ds, users, items)
    if baseline:
        retrieval, ranking = baselines.build(policy, settings, ds, ds, users, items), None
    scorer = Scorer(retrieval, ranking, items, ScoringConfig.from_settings(sc), night)
    staging = lake.staging_path(settings.lake, settings.recs_table, ds)
    staging.mkdir(parents=True)
    rows = fallback = short = 0
    try:
        for part, start in enumerate(range(0, len(users), sc.user_chunk_size)):
            chunk = users.take(slice(start, start + sc.user_chunk_size))
            res = scorer.score(chunk, seen, start)
            tbl, n_short = chunk_table(chunk, items, res)
            path = staging / f"part-{part:05d}.parquet"
            with disk.writing(path):
                pq.write_table(tbl, path)
            faults.fault("precompute.after_part", count=part)  # lists half written, in staging
            rows += tbl.num_rows
            fallback += int(res.fallback.sum())
            short += n_short
        write_coldstart(settings, ds, items, items.available & ~night.blocked, night, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # half a night's lists never reach the lake
        raise
    final = lake.partition_path(settings.lake, settings.recs_table, ds)
    lake.commit_staging(staging, final)
    lake.write_marker(final, fingerprint, table=RECS.name, rows=rows)
    n = len(users)
    return ListsWritten(
        path=str(final),
        users=n,
        rows=rows,
        model_users=n - fallback,
        fallback_users=fallback,
        short_lists=short,
    )


def night_rules(settings: Settings, ds: date, users, items) -> rules.Rules:
    """The blocklist, boosts and per-segment cold-start lists of the night.

    A segment's cold-start list counts the engagement of the last ``features.popularity_days``, like the
    global popular list: on a log whose titles rise and fade, all-time favourites are the wrong first list.
    """
    sc = settings.scoring
    blocked = np.isin(items.item_id, np.asarray(sc.blocklist, dtype=object))
    categories = rules.category_indices(settings.lake, ds) if sc.category_boosts else {}
    recent = inputs.load_interactions(
        settings.lake,
        ds,
        ds - timedelta(days=settings.features.popularity_days),
        ds,
        settings.features,
        arrow=True,
    )
    popular = rules.segment_popular(
        recent, users, items, items.available & ~blocked, sc.top_k, sc.segment_fallback_min_users
    )
    return rules.Rules(blocked, rules.item_boosts(items, sc, categories), popular)


def write_coldstart(
    settings: Settings,
    ds: date,
    items: inputs.ItemTable,
    allowed: np.ndarray,
    night: rules.Rules,
    folder: Path,
) -> None:
    """The cold-start lists beside the night's lists (``lake.COLDSTART``), for users who have none."""
    segments = rules.vocab_indices(settings.lake, ds, "segment")
    table = rules.coldstart_table(items, allowed, night.segment_popular, segments, settings.scoring.top_k)
    path = folder / lake.COLDSTART
    with disk.writing(path):
        pq.write_table(table, path)


def recs_path(settings: Settings, ds: date) -> Path:
    return lake.require_partition(settings.lake, settings.recs_table, ds)
