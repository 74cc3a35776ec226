"""Rolling-origin quality of the lists the pipeline PUBLISHES, against strong baselines, on days it never saw.

Usage: .venv/bin/python bench/quality.py [--dataset ratings] [--dataset demo] [--raw PATH ...]
       [--cutoffs 4] [--step-days 14] [--horizon-days 14] [--valid-days 14]
       [--retrieval-epochs N] [--ranking-epochs N] [--users U --items I --days D --events-per-user E]
       [--als-factors 32,64] [--work /tmp/nightrec-bench-quality] [--out bench/results/quality.md]
       [--reuse-nights] [--keep-env]

For each dataset, C cutoff dates D_1 < ... < D_C are taken ``--step-days`` apart, the last one ``--horizon-days``
before the day after the newest event. For each cutoff D, in cutoff order:

1. The whole nightly flow runs with run date D in a child process that keeps ONE nightrec home for all the
   dataset's cutoffs, so the promotion gate's champion carries over from night to night as in production.
   Night D reads a copy of the raw folder cut at D (events before D; catalog and users as they are): the log
   as it stood that morning (the raw gate rejects a folder with more than 5% of its events after the run
   date). After each night the child reads the snapshot that went live (``verify_live``) and keeps its lists
   and the manifest's policy.
2. The truth is the engagement in [D, D + horizon) (the pipeline's own weights: impressions and ratings below
   ``features.min_rating`` do not count) with items the user had not interacted with before D (any event type
   but ``features.unseen_event_types``: the items the pipeline never recommends again). Evaluated users have
   at least one such item and at least one engaged event before D (warm users); cold users are reported apart
   (published lists against the 30-day popularity only).
3. Baselines fit on events before D only, each excluding the user's items before D and unavailable items,
   top-20: popularity (summed engagement) over the last 7, 30, 90 days and all history (pop_30d is THE
   reference), EASE with its L2 tuned on a validation split (fit before D - valid_days, best NDCG@10 on
   [D - valid_days, D)) and refit before D, ALS (``implicit``, regularization 0.05, 15 iterations) for each
   factor size, its confidence weight alpha tuned on the same validation split. EASE's scores are the user's
   engaged row times ``ease.weights_from_gram``; the exclusion is every seen item (a rating below
   min_rating too), which ``ease.recommend`` (one set of pairs for both) cannot express. Where the pipeline
   publishes EASE with the same L2, the two lists score identically (a check of this script's filtering).
4. Per evaluated user NDCG@10 (binary relevance) and Recall@20, per list set the catalog coverage (distinct
   items in the evaluated users' lists / catalog size). Per-user values are pooled over the cutoffs (a user
   evaluated at two cutoffs counts twice) and compared with the reference by a paired bootstrap over the
   pooled (user, cutoff) pairs.

The results (one section per dataset) go to ``--out`` and to stdout. ``--reuse-nights`` re-evaluates the nights
an earlier run left in ``--work`` (same data, same cutoffs) without running the pipeline again. The nights run
with code defaults: this shell's NIGHTREC_* variables are dropped unless ``--keep-env``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/quality.py` puts bench/ first, not the repository root
    sys.path.insert(0, str(ROOT))

from nightrec.evaluation import metrics  # noqa: E402
from nightrec.evaluation.paired import paired_bootstrap  # noqa: E402
from nightrec.scoring import ease  # noqa: E402
from nightrec.settings import Settings  # noqa: E402

REF = "pop_30d"
K = 20
KS = [10, 20]
POP_WINDOWS = {"pop_7d": 7, "pop_30d": 30, "pop_90d": 90, "pop_all": 0}
EASE_GRID = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0, 15000.0, 30000.0)
ALS_ALPHAS = (1.0, 5.0, 20.0, 40.0)
DEFAULTS = {
    # 210 days: four cutoffs 14 days apart plus the 14-day horizon leave ~150 days of history at the first.
    "ratings": {"users": 2000, "items": 1500, "days": 210, "events_per_user": 60.0},
    # 100 days, not the demo's 60: with 4 x 14-day steps and a 14-day horizon a 60-day log would leave the
    # first cutoff 4 days of history, less than the pipeline's own validation + holdout windows.
    "demo": {"users": 3000, "items": 1500, "days": 100, "events_per_user": 60.0},
}
US_PER_DAY = 86_400_000_000
MIN_HISTORY_DAYS = 28  # the pipeline needs train + valid (7) + holdout (7) days before a run date


# ---------------------------------------------------------------------------------------------- child: nights

EPHEMERAL_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"


def _quiet_env(settings: Settings) -> None:
    """The library defaults `nightrec run` sets, before prefect is imported."""
    from nightrec.ops.library_env import set_library_defaults

    set_library_defaults(settings)


def run_nights(raw: Path, home: Path, dates: list[date], out: Path) -> None:
    """(Child process.) The nightly flow for each date in turn, in one home; after each, the live lists.

    Night D reads ``raw/<D>/``, the raw data as it stood on D (``snapshot_raw``).

    Writes ``out/night-<D>.json`` (status, wall time, the live manifest's policy and counts, the flow's result
    or the error with its traceback) and ``out/published-<D>.parquet`` (the live snapshot's rows).
    """
    import logging

    settings = Settings()
    _quiet_env(settings)
    logging.getLogger("mlflow").setLevel(logging.ERROR)

    import pyarrow as pa

    from flows.nightly import nightly
    from nightrec.io.store import open_store
    from nightrec.publish.reader import verify_live
    from schemas.params import NightlyParams

    out.mkdir(parents=True, exist_ok=True)
    for d in dates:
        record: dict = {
            "date": d.isoformat(),
            "started": datetime.now(UTC).isoformat(),
            "load_start": os.getloadavg(),
        }
        t0 = time.perf_counter()
        print(f"=== night {d} ===", flush=True)
        try:
            params = NightlyParams(data=str(raw / d.isoformat()), run_date=d)
            try:
                result = nightly(params)
            except RuntimeError as e:
                if EPHEMERAL_TIMEOUT not in str(e):
                    raise
                result = nightly(params)  # the local API was slow to start: nothing ran yet
        except Exception as e:  # noqa: BLE001 - the bench reports what failed and goes on with the next night
            record.update(
                status="failed",
                wall_s=time.perf_counter() - t0,
                error=f"{type(e).__name__}: {e}"[:3000],
                traceback=traceback.format_exc()[-8000:],
            )
            (out / f"night-{d}.json").write_text(json.dumps(record, default=str, indent=1))
            print(f"night {d} FAILED: {record['error'][:500]}", flush=True)
            continue
        wall = time.perf_counter() - t0
        store = open_store(settings.store)
        manifest = verify_live(store)
        parts = [pq.read_table(io.BytesIO(store.get_bytes(p.key))) for p in manifest.parts]
        pq.write_table(pa.concat_tables(parts), out / f"published-{d}.parquet")
        record.update(
            status="completed",
            wall_s=wall,
            load_end=os.getloadavg(),
            manifest={
                "ds": manifest.ds.isoformat(),
                "generation": manifest.generation,
                "policy": manifest.policy,
                "counts": manifest.counts,
                "top_k": manifest.top_k,
            },
            result=result.model_dump(mode="json"),
        )
        (out / f"night-{d}.json").write_text(json.dumps(record, default=str, indent=1))
        print(f"night {d}: {wall:.0f} s, live policy {manifest.policy.get('name')}", flush=True)


# ------------------------------------------------------------------------------------------------ raw data


@dataclass
class Log:
    """Clean events as the pipeline sees them (known types and items, replays dropped, weighted)."""

    users: pd.Index  # user ids (position = user code)
    items: pd.Index  # catalog item ids (position = item column)
    available: np.ndarray  # bool [n_items]
    u: np.ndarray  # int64 [n]
    i: np.ndarray  # int64 [n]
    ts: np.ndarray  # int64 [n] microseconds since the epoch, UTC
    weight: np.ndarray  # float64 [n]
    seen: np.ndarray  # bool [n]: the event makes its item seen (not an unseen_event_type)
    n_raw: int = 0

    @property
    def first_day(self) -> date:
        return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(self.ts.min()))).date()

    @property
    def end(self) -> date:
        """The day after the newest event (the pipeline's default run date)."""
        newest = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(self.ts.max()))
        return newest.date() + timedelta(days=1)


def _read_table(raw: Path, name: str, columns: list[str]):

    from nightrec.io.raw import table_files
    from schemas.tables import RAW_TABLES

    fmt, files = table_files(raw, RAW_TABLES[name])
    if fmt == "parquet":
        frames = []
        for f in files:
            have = pq.read_schema(f).names
            df = pq.read_table(f, columns=[c for c in columns if c in have]).to_pandas()
            frames.append(df.reindex(columns=columns))
        return pd.concat(frames, ignore_index=True)
    if fmt == "csv":
        return pd.concat([pd.read_csv(f).reindex(columns=columns) for f in files], ignore_index=True)
    return pd.concat([pd.read_json(f, lines=True).reindex(columns=columns) for f in files], ignore_index=True)


def load_log(raw: Path, cfg) -> Log:
    """Events of ``raw`` cleaned like ``nightrec.features.events.clean_events`` (all dates: the truth too)."""

    items = _read_table(raw, "items", ["item_id", "available"]).dropna(subset=["item_id"])
    items = items.drop_duplicates("item_id").reset_index(drop=True)
    avail = items["available"]
    if avail.dtype == object:
        avail = avail.map(
            lambda v: v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1", "yes")
        )
    ev = _read_table(raw, "events", ["user_id", "item_id", "event_type", "ts", "value"])
    n_raw = len(ev)
    ev = ev.dropna(subset=["user_id", "item_id", "event_type", "ts"])
    ev = ev[ev["event_type"].isin(list(cfg.event_weights))]
    item_index = pd.Index(items["item_id"].astype(str))
    ev = ev.assign(i=item_index.get_indexer(ev["item_id"].astype(str)))
    ev = ev[ev["i"] >= 0]
    ts = pd.to_datetime(ev["ts"], utc=True)
    ev = ev.assign(ts=((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)).astype(np.int64))
    ev["value"] = pd.to_numeric(ev["value"], errors="coerce")
    # A replay is a second row with the same user, item, type and time; the largest value is kept.
    ev = ev.groupby(["user_id", "i", "event_type", "ts"], as_index=False, sort=False)["value"].max()
    et, value = ev["event_type"], ev["value"]
    w = et.map({k: float(v) for k, v in cfg.event_weights.items()}).astype(np.float64)
    rating = (et == "rating").to_numpy()
    if cfg.rating_weight == "value":
        scale = float(cfg.event_weights.get("rating", 0.0)) / cfg.rating_scale
        w[rating] = value[rating].fillna(0.0) * scale
    w[rating & (value < cfg.min_rating).to_numpy()] = 0.0
    codes, users = pd.factorize(ev["user_id"].astype(str))
    return Log(
        users=pd.Index(users),
        items=item_index,
        available=avail.astype(bool).to_numpy(),
        u=codes.astype(np.int64),
        i=ev["i"].to_numpy(np.int64),
        ts=ev["ts"].to_numpy(np.int64),
        weight=w.to_numpy(np.float64),
        seen=~et.isin(cfg.unseen_event_types).to_numpy(),
        n_raw=n_raw,
    )


def _us(d: date) -> int:
    return int(datetime.combine(d, datetime.min.time(), tzinfo=UTC).timestamp()) * 1_000_000


# ------------------------------------------------------------------------------------------- splits, lists


@dataclass
class Target:
    """Users to evaluate (global codes, sorted) and their relevant (row, item) pairs."""

    users: np.ndarray  # int64 [n] user codes
    rel_rows: np.ndarray  # int64 [m] row in users of each relevant pair
    rel_items: np.ndarray  # int64 [m] item column of each relevant pair
    n_rel: np.ndarray  # int64 [n] relevant items per user

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class Split:
    cut: date
    seen: sp.csr_matrix  # [n_users, n_items] of items seen before the cut
    engaged: sp.csr_matrix  # [n_users, n_items] of summed engagement weight before the cut
    warm: Target
    cold: Target


def make_split(log: Log, cut: date, stop: date) -> Split:

    shape = (len(log.users), len(log.items))
    c, s = _us(cut), _us(stop)
    before = log.ts < c
    sb = before & log.seen
    seen = sp.csr_matrix((np.ones(int(sb.sum()), np.float32), (log.u[sb], log.i[sb])), shape=shape)
    seen.data[:] = 1.0
    eb = before & (log.weight > 0)
    engaged = sp.csr_matrix((log.weight[eb], (log.u[eb], log.i[eb])), shape=shape)
    fut = (log.ts >= c) & (log.ts < s) & (log.weight > 0)
    pairs = np.unique(log.u[fut] * shape[1] + log.i[fut])
    pu, pi = pairs // shape[1], pairs % shape[1]
    fresh = np.asarray(seen[pu, pi]).ravel() == 0 if len(pu) else np.zeros(0, bool)
    pu, pi = pu[fresh], pi[fresh]
    warm_user = np.diff(engaged.indptr) > 0

    def target(mask: np.ndarray) -> Target:
        users = np.unique(pu[mask])
        rows = np.searchsorted(users, pu[mask])
        return Target(users, rows, pi[mask], np.bincount(rows, minlength=len(users)))

    return Split(cut, seen, engaged, target(warm_user[pu]), target(~warm_user[pu]))


def top_lists(score_rows, users, split: Split, allowed, k: int = K, chunk: int = 2048):
    """Top-``k`` item columns per user from ``score_rows(user codes) -> float [B, n_items]``, excluding the
    user's seen items and unavailable items (-1 where fewer than ``k`` remain)."""

    n_items = split.seen.shape[1]
    kk = min(k, n_items)
    out = np.full((len(users), k), -1, dtype=np.int64)
    blocked = torch.from_numpy(~np.asarray(allowed, bool))
    for lo in range(0, len(users), chunk):
        rows = users[lo : lo + chunk]
        s = torch.from_numpy(np.array(score_rows(rows), dtype=np.float32))  # a writable copy
        s[:, blocked] = -torch.inf
        s[torch.from_numpy(split.seen[rows].toarray() > 0)] = -torch.inf
        top_s, top = torch.topk(s, kk, dim=1)
        out[lo : lo + len(rows), :kk] = np.where(torch.isfinite(top_s).numpy(), top.numpy(), -1)
    return out


def popularity_scores(log: Log, cut: date, window_days: int):
    """An item's rank from the bottom by summed engagement in the window (ties to the smaller item id)."""

    c = _us(cut)
    m = (log.ts < c) & (log.weight > 0)
    if window_days:
        m &= log.ts >= c - window_days * US_PER_DAY
    eng = np.bincount(log.i[m], weights=log.weight[m], minlength=len(log.items))
    order = np.lexsort((np.asarray(log.items, dtype=str), -eng))
    score = np.empty(len(log.items), np.float32)
    score[order] = np.arange(len(log.items), 0, -1, dtype=np.float32)
    return score


def popularity_lists(log: Log, split: Split, window_days: int, users):

    score = popularity_scores(log, split.cut, window_days)
    return top_lists(
        lambda rows: np.broadcast_to(score, (len(rows), len(score))), users, split, log.available
    )


def measure(lists, tgt: Target, n_items: int) -> dict:

    hits = metrics.hits_matrix(lists, tgt.rel_rows, tgt.rel_items, n_items)
    pu = metrics.per_user(hits, tgt.n_rel, KS)
    return {
        "ndcg_at_10": pu["ndcg_at_10"],
        "recall_at_20": pu["recall_at_20"],
        "coverage": metrics.coverage(lists, n_items),
    }


def _ease_scorer(split: Split, weights):

    def score(rows):
        x = torch.from_numpy((split.engaged[rows].toarray() > 0).astype(np.float32))
        return (x @ weights).numpy()

    return score


def ease_lists(log: Log, split: Split, l2: float, users, g=None):

    if g is None:
        r, c = split.engaged.nonzero()
        g = ease.gram(r, c, split.engaged.shape[0], split.engaged.shape[1])
    return top_lists(_ease_scorer(split, ease.weights_from_gram(g, l2)), users, split, log.available)


def tune_ease(log: Log, valid: Split) -> tuple[float, dict[float, float]]:
    """The L2 of the grid with the best NDCG@10 on the validation split (fit before its cut)."""

    if not len(valid.warm):
        return ease.DEFAULT_L2, {}
    r, c = valid.engaged.nonzero()
    g = ease.gram(r, c, valid.engaged.shape[0], valid.engaged.shape[1])
    scores = {
        l2: float(
            measure(ease_lists(log, valid, l2, valid.warm.users, g), valid.warm, len(log.items))[
                "ndcg_at_10"
            ].mean()
        )
        for l2 in EASE_GRID
    }
    return max(scores, key=scores.get), scores


def fit_als(engaged, factors: int, alpha: float):
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    # implicit runs its own threads; a multi-threaded BLAS under them is slower (and it warns, on construction).
    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors, regularization=0.05, alpha=alpha, iterations=15, random_state=0
        )
        model.fit(engaged.astype(np.float32).tocsr(), show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


def als_lists(log: Log, split: Split, factors: int, alpha: float, users):
    uf, itf = fit_als(split.engaged, factors, alpha)
    return top_lists(lambda rows: uf[rows] @ itf.T, users, split, log.available)


def tune_als(log: Log, valid: Split, factors: int) -> tuple[float, dict[float, float]]:
    if not len(valid.warm):
        return 1.0, {}
    scores = {
        a: float(
            measure(als_lists(log, valid, factors, a, valid.warm.users), valid.warm, len(log.items))[
                "ndcg_at_10"
            ].mean()
        )
        for a in ALS_ALPHAS
    }
    return max(scores, key=scores.get), scores


def published_lists(log: Log, split: Split, tgt: Target, path: Path) -> tuple:
    """The live snapshot's lists for ``tgt``'s users as item columns; missing users get an empty list.

    Returns (lists, info) with info: users missing from the snapshot, users whose list is the fallback,
    list entries that are items the user had seen (should be 0), entries outside the catalog.
    """

    tbl = pd.read_parquet(path, columns=["user_id", "rank", "item_id", "source"])
    code = log.users.get_indexer(tbl["user_id"].astype(str))
    pos = np.searchsorted(tgt.users, code)
    pos = np.minimum(pos, max(len(tgt.users) - 1, 0))
    mine = (code >= 0) & (len(tgt.users) > 0)
    mine &= tgt.users[pos] == code if len(tgt.users) else False
    rank = tbl["rank"].to_numpy() - 1
    mine &= (rank >= 0) & (rank < K)
    cols = log.items.get_indexer(tbl["item_id"].astype(str))
    lists = np.full((len(tgt), K), -1, dtype=np.int64)
    lists[pos[mine], rank[mine]] = cols[mine]
    have = np.zeros(len(tgt), bool)
    have[pos[mine]] = True
    fallback = np.zeros(len(tgt), bool)
    fb = mine & (tbl["source"].to_numpy() == "fallback")
    fallback[pos[fb]] = True
    ok = lists >= 0
    r, c = np.nonzero(ok)
    seen_hits = int(np.asarray(split.seen[tgt.users[r], lists[r, c]]).sum()) if len(r) else 0
    info = {
        "missing_users": int((~have).sum()),
        "fallback_users": int(fallback.sum()),
        "seen_items_listed": seen_hits,
        "unknown_items": int((mine & (cols < 0)).sum()),
        "rows": len(tbl),
    }
    return lists, info


# ------------------------------------------------------------------------------------------------ datasets


@dataclass
class Dataset:
    name: str
    raw: Path
    description: str
    gen_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def prepare(kind: str, work: Path, a) -> Dataset:
    if kind not in DEFAULTS:
        raw = Path(kind).resolve()
        return Dataset(raw.name, raw, f"raw folder `{raw}`")
    size = {k: getattr(a, k) if getattr(a, k) is not None else v for k, v in DEFAULTS[kind].items()}
    out = work / kind / "raw"
    if kind == "ratings":
        desc = "`profiles.generate('ratings', ...)` (ratings only, late-1990s dates, many one-day users)"
    else:
        desc = "`synthetic.generate(...)` (the demo shape: impressions, clicks, carts, purchases)"
    desc += (
        f", {size['users']} users, {size['items']} items, {size['days']} days, "
        f"events_per_user {size['events_per_user']:g}, seed {a.seed}"
    )
    if a.reuse_nights and (out / "events").exists():
        return Dataset(kind, out, desc + f" (reused from `{out}`)")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    from nightrec.data import profiles

    profiles.generate(
        "ratings" if kind == "ratings" else "default",
        size["users"],
        size["items"],
        size["days"],
        out,
        seed=a.seed,
        events_per_user=size["events_per_user"],
    )
    return Dataset(kind, out, desc, time.perf_counter() - t0)


def pick_cutoffs(log: Log, n: int, step: int, horizon: int) -> list[date]:
    last = log.end - timedelta(days=horizon)
    dates = [last - timedelta(days=step * (n - 1 - j)) for j in range(n)]
    if (dates[0] - log.first_day).days < MIN_HISTORY_DAYS:
        raise SystemExit(
            f"the first cutoff {dates[0]} leaves {(dates[0] - log.first_day).days} days of history (events from "
            f"{log.first_day}); need >= {MIN_HISTORY_DAYS}: fewer --cutoffs, a smaller --step-days or more --days"
        )
    return dates


def snapshot_raw(raw: Path, out: Path, d: date) -> Path:
    """``raw`` as it stood on the morning of ``d``: events before ``d``, the catalog and users as they are.

    The raw gate rejects a folder whose events run past the run date (more than 5% in the future), and a
    nightly run in production never has them: each night gets the log cut at its date.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from nightrec.io.raw import table_files
    from schemas.tables import RAW_TABLES

    shutil.rmtree(out, ignore_errors=True)
    for name in ("items", "users"):
        shutil.copytree(raw / name, out / name)
    fmt, files = table_files(raw, RAW_TABLES["events"])
    bound = datetime.combine(d, datetime.min.time())
    for f in files:
        dest = out / "events" / f.relative_to(raw / "events")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "parquet":
            tbl = pq.read_table(f)
            t = tbl.schema.field("ts").type
            b = pa.scalar(bound.replace(tzinfo=UTC) if t.tz else bound, type=t)
            pq.write_table(tbl.filter(pc.less(tbl["ts"], b)), dest)
        elif fmt == "csv":
            df = pd.read_csv(f, dtype=str, keep_default_na=False)
            df[pd.to_datetime(df["ts"], utc=True, errors="coerce") < _utc_ts(d)].to_csv(dest, index=False)
        else:
            lines = f.read_text().splitlines()
            keep = [ln for ln in lines if ln.strip() and _jsonl_before(ln, d)]
            dest.write_text("".join(ln + "\n" for ln in keep))
    return out


def _utc_ts(d: date) -> pd.Timestamp:
    return pd.Timestamp(datetime.combine(d, datetime.min.time(), tzinfo=UTC))


def _jsonl_before(line: str, d: date) -> bool:
    try:
        ts = pd.to_datetime(json.loads(line).get("ts"), utc=True)
    except (ValueError, TypeError, AttributeError):
        return True  # a malformed line stays: the raw gate's quarantine is part of what is measured
    return bool(pd.isna(ts) or ts < _utc_ts(d))


def run_child(ds: Dataset, asof: Path, home: Path, nights: Path, dates: list[date], a) -> float:
    env = dict(os.environ)
    if a.clean_env:  # this shell's NIGHTREC_* settings would change what is measured
        env = {k: v for k, v in env.items() if not k.startswith("NIGHTREC_")}
    env.update(
        NIGHTREC_HOME=str(home),
        NIGHTREC_SCORING__TOP_K=str(K),
        PREFECT_HOME=str(home / "prefect"),
        PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(home / "prefect" / "results"),
    )
    if a.retrieval_epochs:
        env["NIGHTREC_TRAIN__RETRIEVAL_EPOCHS"] = str(a.retrieval_epochs)
    if a.ranking_epochs:
        env["NIGHTREC_TRAIN__RANKING_EPOCHS"] = str(a.ranking_epochs)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-nights",
        "--raw",
        str(asof),
        "--child-home",
        str(home),
        "--child-out",
        str(nights),
        "--child-dates",
        ",".join(d.isoformat() for d in dates),
    ]
    log_path = nights / "nights.log"
    nights.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as logf:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log_path.read_text()[-4000:]
        print(f"[{ds.name}] the night runner exited with {proc.returncode}; log tail:\n{tail}", flush=True)
    return wall


# ------------------------------------------------------------------------------------------------- report


def _f(x: float, nd: int = 4) -> str:
    return f"{x:.{nd}f}"


def _short(text: str, n: int = 110) -> str:
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= n else text[: n - 1] + "…"


def evaluate_dataset(ds: Dataset, a, work: Path) -> list[str]:

    cfg = Settings().features
    log = load_log(ds.raw, cfg)
    dates = pick_cutoffs(log, a.cutoffs, a.step_days, a.horizon_days)
    home, nights = work / ds.name / "home", work / ds.name / "nights"
    print(
        f"[{ds.name}] {len(log.users)} users, {len(log.items)} items, {len(log.u)} clean events "
        f"({log.first_day} .. {log.end - timedelta(days=1)}); cutoffs {', '.join(map(str, dates))}",
        flush=True,
    )
    if a.reuse_nights:
        code = (nights / "code.txt").read_text() if (nights / "code.txt").exists() else "unknown"
        child_wall = sum(json.loads(f.read_text()).get("wall_s", 0.0) for f in nights.glob("night-*.json"))
    else:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(nights, ignore_errors=True)
        asof = work / ds.name / "raw-asof"
        for d in dates:
            snapshot_raw(ds.raw, asof / d.isoformat(), d)
        before = code_version()
        child_wall = run_child(ds, asof, home, nights, dates, a)
        code = code_note(before, code_version())
        (nights / "code.txt").write_text(code)

    pooled: dict[str, dict[str, list]] = {}
    per_cut_rows, night_lines, cold_rows, issues = [], [], [], []
    names: list[str] = []
    t_eval = time.perf_counter()
    for d in dates:
        rec_path = nights / f"night-{d}.json"
        rec = json.loads(rec_path.read_text()) if rec_path.exists() else {"status": "missing", "date": str(d)}
        if rec.get("status") != "completed":
            err = rec.get("error", "the night runner wrote no record (see nights.log)")
            issues.append(f"- {d}: the nightly flow FAILED: `{_short(err, 400)}`")
            if rec.get("traceback"):
                print(f"[{ds.name}] night {d} traceback:\n{rec['traceback']}", flush=True)
            per_cut_rows.append((d, None, f"{rec.get('wall_s', 0):.0f}"))
            continue
        man = rec["manifest"]
        policy = man.get("policy") or {}
        res = rec.get("result") or {}
        promo = res.get("evaluate_and_promote") or {}
        if man["ds"] != str(d):
            issues.append(
                f"- {d}: the live snapshot is for {man['ds']}, not {d} (nothing published that night?)"
            )
        split = make_split(log, d, d + timedelta(days=a.horizon_days))
        valid = make_split(log, d - timedelta(days=a.valid_days), d)
        tgt = split.warm
        lists: dict[str, np.ndarray] = {}
        pub, info = published_lists(log, split, tgt, nights / f"published-{d}.parquet")
        lists["published"] = pub
        for name, w in POP_WINDOWS.items():
            lists[name] = popularity_lists(log, split, w, tgt.users)
        l2, _ = tune_ease(log, valid)
        lists["ease"] = ease_lists(log, split, l2, tgt.users)
        alphas = {}
        for f in a.als_factors:
            alphas[f], _ = tune_als(log, valid, f)
            lists[f"als_{f}"] = als_lists(log, split, f, alphas[f], tgt.users)
        measured = {name: measure(li, tgt, len(log.items)) for name, li in lists.items()}
        names = list(measured)
        for name, m in measured.items():
            p = pooled.setdefault(name, {"ndcg": [], "recall": [], "coverage": [], "params": []})
            p["ndcg"].append(m["ndcg_at_10"])
            p["recall"].append(m["recall_at_20"])
            p["coverage"].append(m["coverage"])
        pooled["ease"]["params"].append(f"{l2:g}")
        for f in a.als_factors:
            pooled[f"als_{f}"]["params"].append(f"{alphas[f]:g}")
        pooled["published"]["params"].append(_policy(policy))
        cmp_d = paired_bootstrap(measured["published"]["ndcg_at_10"], measured[REF]["ndcg_at_10"])
        per_cut_rows.append(
            (
                d,
                f"| {d} | {_policy(policy)} | {len(tgt)} ({len(split.cold)}) | {rec['wall_s']:.0f} | "
                + " | ".join(_f(float(measured[n]["ndcg_at_10"].mean())) for n in names)
                + f" | {cmp_d.diff:+.4f} [{cmp_d.low:+.4f}, {cmp_d.high:+.4f}] | {l2:g} | "
                + ", ".join(f"{alphas[f]:g}" for f in a.als_factors)
                + " |",
                None,
            )
        )
        print(per_cut_rows[-1][1], flush=True)
        # Cold users: no engagement before D; the published lists (fallback) against pop_30d only.
        if len(split.cold):
            cpub, cinfo = published_lists(log, split, split.cold, nights / f"published-{d}.parquet")
            cref = popularity_lists(log, split, POP_WINDOWS[REF], split.cold.users)
            cold_rows.append(
                (
                    measure(cpub, split.cold, len(log.items))["ndcg_at_10"],
                    measure(cref, split.cold, len(log.items))["ndcg_at_10"],
                    cinfo,
                )
            )
        for key, bad in (("missing_users", "missing from the live snapshot"), ("seen_items_listed", "")):
            if info[key]:
                what = bad or "list entries that are items the user had seen before D"
                issues.append(f"- {d}: {info[key]} evaluated users/entries {what}")
        own = promo.get("metrics") or {}
        own_txt = ", ".join(f"{c} {v.get('ndcg_at_10', 0):.4f}" for c, v in own.items())
        secs = res.get("seconds") or {}
        if rec.get("started"):
            began = datetime.fromisoformat(rec["started"])
        else:  # a record from before start times were kept: its file was written as the night ended
            began = datetime.fromtimestamp(rec_path.stat().st_mtime, UTC) - timedelta(seconds=rec["wall_s"])
        load = (
            f", load average {rec['load_start'][0]:.1f} -> {rec['load_end'][0]:.1f}"
            if rec.get("load_end")
            else ""
        )
        night_lines.append(
            f"- {d} (run {began:%Y-%m-%d %H:%M} UTC{load}): {rec['wall_s']:.0f} s wall "
            f"(stages {sum(secs.values()):.0f} s: "
            + ", ".join(f"{k} {v:.0f}" for k, v in secs.items())
            + f"). Live: **{policy.get('name')}** (generation {man['generation']}; "
            f"{info['fallback_users']}/{len(tgt)} evaluated users on fallback lists). "
            f"Gate: {_short(promo.get('reason', ''), 240)}. Pipeline's own holdout NDCG@10: {own_txt}."
        )
    eval_s = time.perf_counter() - t_eval

    lines = [
        f"## {ds.name}: rolling-origin quality of the published lists (`bench/quality.py`)",
        "",
        f"Data: {ds.description}"
        + (f" (generated in {ds.gen_s:.1f} s)" if ds.gen_s else "")
        + f"; {len(log.users)} users with events, {len(log.items)} catalog items "
        f"({int((~log.available).sum())} unavailable), {len(log.u)} clean events of {log.n_raw} raw, "
        f"{log.first_day} .. {log.end - timedelta(days=1)}.",
        "",
        f"Cutoffs {', '.join(map(str, dates))} ({a.cutoffs} x {a.step_days} days apart), horizon "
        f"{a.horizon_days} days, baselines tuned on the {a.valid_days} days before each cutoff. One nightrec home "
        f"for all cutoffs (the champion carries over). top_k={K}"
        + (f", retrieval_epochs={a.retrieval_epochs}" if a.retrieval_epochs else "")
        + (f", ranking_epochs={a.ranking_epochs}" if a.ranking_epochs else "")
        + f". Code: {code}. Machine: {_machine()}. Nights {child_wall:.0f} s in all (child process), baselines and metrics "
        f"{eval_s:.0f} s.",
        "",
        "Evaluated: warm users (>= 1 engaged event before D) with >= 1 engaged item in [D, D + horizon) they had "
        "not interacted with before D; cold users in brackets, reported apart below.",
        "",
        "### NDCG@10 per cutoff",
        "",
        "| cutoff | live policy | users (cold) | night s | "
        + " | ".join(names)
        + " | published - pop_30d [95% CI] | EASE L2 | ALS alpha ("
        + ", ".join(map(str, a.als_factors))
        + ") |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " | --- | ---: | ---: |",
        *[
            row if row else f"| {d} | **failed** | | {wall} | " + " | ".join("" for _ in names) + " | | | |"
            for d, row, wall in per_cut_rows
        ],
        "",
    ]
    if pooled:
        ref = pooled[REF]
        ref_nd = np.concatenate(ref["ndcg"])
        ref_cov = float(np.mean(ref["coverage"]))
        lines += [
            f"### Pooled over {len(ref['ndcg'])} cutoffs ({len(ref_nd)} user-cutoff pairs)",
            "",
            "| lists | NDCG@10 | Recall@20 | coverage | coverage / pop_30d | NDCG@10 - pop_30d [95% CI] | lift % |",
            "| --- | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        summary = {}
        for name in names:
            p = pooled[name]
            nd, rc = np.concatenate(p["ndcg"]), np.concatenate(p["recall"])
            cov = float(np.mean(p["coverage"]))
            c = paired_bootstrap(nd, ref_nd, confidence=0.95, samples=2000, seed=0)
            lift = (nd.mean() / max(ref_nd.mean(), 1e-12) - 1.0) * 100
            label = _label(name, p["params"])
            summary[name] = (nd.mean(), cov, c, lift)
            lines.append(
                f"| {label} | {_f(nd.mean())} | {_f(rc.mean())} | {_f(cov)} | {cov / max(ref_cov, 1e-12):.2f}x | "
                f"{c.diff:+.4f} [{c.low:+.4f}, {c.high:+.4f}] | {lift:+.1f}% |"
            )
        pub_nd, pub_cov, pub_c, pub_lift = summary["published"]
        best = max((n for n in names if n != "published"), key=lambda n: summary[n][0])
        vs_best = paired_bootstrap(
            np.concatenate(pooled["published"]["ndcg"]), np.concatenate(pooled[best]["ndcg"])
        )
        ratio = pub_nd / max(ref_nd.mean(), 1e-12)
        cov_ratio = pub_cov / max(ref_cov, 1e-12)
        lines += [
            "",
            f"Goal: published NDCG@10 >= 1.05 x pop_30d pooled: {ratio:.3f}x "
            f"({'met' if ratio >= 1.05 else 'NOT met'}; paired difference {pub_c.describe()}). "
            f"Coverage >= 3 x pop_30d's: {cov_ratio:.2f}x ({'met' if cov_ratio >= 3 else 'NOT met'}).",
            f"Published vs the strongest baseline here ({best}): {vs_best.describe()}.",
            "Coverage is the mean over cutoffs of (distinct items in the evaluated users' lists / catalog size).",
        ]
        if cold_rows:
            cp = np.concatenate([c[0] for c in cold_rows])
            cr = np.concatenate([c[1] for c in cold_rows])
            cc = paired_bootstrap(cp, cr)
            fb = sum(c[2]["fallback_users"] for c in cold_rows)
            miss = sum(c[2]["missing_users"] for c in cold_rows)
            lines.append(
                f"Cold users (no engagement before D, excluded above): {len(cp)} user-cutoff pairs ({fb} on the "
                f"published fallback lists, {miss} missing from the snapshot: scored as empty lists), published "
                f"NDCG@10 {cp.mean():.4f} vs pop_30d {cr.mean():.4f}, difference {cc.describe()}."
            )
    lines += ["", "### Nights", "", *night_lines]
    if issues:
        lines += ["", "### Problems", "", *issues]
    return lines


def _policy(policy: dict) -> str:
    """The live policy as `ease (l2 500)`, `popularity_30d`, `learned (r3, k3)` (model versions)."""
    name, params = policy.get("name", "?"), dict(policy.get("params") or {})
    if policy.get("kind") == "learned":
        return f"{name} (r{params.get('retrieval')}, k{params.get('ranking')})"
    if policy.get("kind") == "popularity" or not params:
        return name
    text = ", ".join(
        f"{k.replace('_', ' ')} {v:g}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
        for k, v in params.items()
    )
    return f"{name} ({text})"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def code_version() -> tuple[str, str]:
    """The checkout the nights run: (commit sha, `sha subject` and how many tracked files differ from it)."""
    try:
        sha, subject = _git("log", "-1", "--format=%h"), _git("log", "-1", "--format=%s")
        dirty = [
            ln for ln in _git("status", "--porcelain", "--untracked-files=no").splitlines() if ln.strip()
        ]
    except (OSError, subprocess.CalledProcessError):
        return "", "unknown (no git)"
    text = f"`{sha} {subject[:70]}`" + (f" with {len(dirty)} modified tracked file(s)" if dirty else "")
    return sha, text


def code_note(before: tuple[str, str], after: tuple[str, str]) -> str:
    """What the night runner ran (it imports the code once, at its start) and whether the checkout moved."""
    if before == after:
        return before[1]
    try:
        files = ", ".join(_git("diff", "--name-only", before[0], after[0]).split()) if before[0] else "?"
    except (OSError, subprocess.CalledProcessError):
        files = "?"
    return (
        f"{before[1]} (imported by the night runner at its start; the checkout moved to {after[1]} during the "
        f"nights, files: {files or 'none'})"
    )


def _label(name: str, params: list[str]) -> str:
    if name == "published":
        runs: list[list] = []
        for x in params:  # consecutive nights with the same live policy: `name x3`
            if runs and runs[-1][0] == x:
                runs[-1][1] += 1
            else:
                runs.append([x, 1])
        return "published: " + " / ".join(f"{x} x{n}" if n > 1 else x for x, n in runs)
    if name == "ease":
        return f"ease (l2 {', '.join(params)})"
    if name.startswith("als_"):
        return f"als({name[4:]}) (alpha {', '.join(params)})"
    return name


def _machine() -> str:
    try:
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        threads = f", torch {torch.__version__} with {torch.get_num_threads()} threads"
    except Exception:  # noqa: BLE001
        gpu, threads = "GPU unknown", ""
    return f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}{threads}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", action="append", choices=sorted(DEFAULTS), default=[])
    ap.add_argument(
        "--raw", action="append", type=Path, default=[], help="A raw folder (events/, items/, users/)."
    )
    ap.add_argument("--cutoffs", type=int, default=4)
    ap.add_argument("--step-days", type=int, default=14)
    ap.add_argument("--horizon-days", type=int, default=14)
    ap.add_argument(
        "--valid-days", type=int, default=14, help="Validation window for EASE's L2 and ALS's alpha."
    )
    ap.add_argument("--retrieval-epochs", type=int)
    ap.add_argument("--ranking-epochs", type=int)
    ap.add_argument("--users", type=int, help="Generated datasets: users (default per dataset).")
    ap.add_argument("--items", type=int)
    ap.add_argument("--days", type=int)
    ap.add_argument("--events-per-user", type=float)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--als-factors", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64])
    ap.add_argument(
        "--keep-env",
        dest="clean_env",
        action="store_false",
        help="Pass this shell's NIGHTREC_* settings to the nights (default: drop them, code defaults apply).",
    )
    ap.add_argument(
        "--reuse-nights",
        action="store_true",
        help="Evaluate the nights an earlier run left in --work (same data and cutoffs) instead of running them.",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/nightrec-bench-quality"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality.md")
    ap.add_argument("--child-nights", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-home", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--child-dates", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child_nights:
        dates = [date.fromisoformat(x) for x in a.child_dates.split(",")]
        run_nights(a.raw[0], a.child_home, dates, a.child_out)
        return
    kinds = [*a.dataset, *(str(p) for p in a.raw)] or ["ratings"]
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    started = datetime.now(UTC)
    load0 = os.getloadavg()[0]
    sections = []
    for kind in kinds:
        ds = prepare(kind, a.work, a)
        sections.append("\n".join(evaluate_dataset(ds, a, a.work)))
        print(sections[-1] + "\n", flush=True)
    total = time.perf_counter() - t0
    what = (
        "Baselines and metrics computed (the nights reused: run times above)"
        if a.reuse_nights
        else "Measured"
    )
    footer = (
        f"{what} {started:%Y-%m-%d %H:%M} UTC, {total / 60:.1f} min in all; load average {load0:.2f} at the "
        f"start, {os.getloadavg()[0]:.2f} at the end. Command: `{' '.join(['bench/quality.py', *sys.argv[1:]])}`."
    )
    text = "\n\n".join(sections) + "\n\n" + footer + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(footer)


if __name__ == "__main__":
    main()
