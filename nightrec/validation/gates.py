"""The data gates: raw inputs, feature tables and final recommendations.

Each gate runs Great Expectations suites generated from ``schemas/`` and returns a report; the caller decides to
stop the run (``GateFailed``) before anything live changes.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from nightrec.evaluation import night_report
from nightrec.evaluation.slices import SliceReport
from nightrec.io import lake
from nightrec.scoring import inputs
from nightrec.scoring.stage import META
from nightrec.settings import Settings
from nightrec.validation import history, profile, runner
from nightrec.validation.change_checks import change_checks
from nightrec.validation.checks import Check, run_checks
from nightrec.validation.feature_gate import feature_checks, feature_stats, validate_features
from nightrec.validation.list_figures import list_figures
from nightrec.validation.raw_gate import validate_raw
from nightrec.validation.report import GateReport, docs_dir, make_report
from schemas import expectations
from schemas.manifest import DEFAULT_CHANNEL
from schemas.tables import RECS

__all__ = [
    "GateReport",
    "docs_dir",
    "feature_checks",
    "feature_stats",
    "validate_features",
    "validate_raw",
    "validate_recs",
    "recs_audit",
    "VALIDATION",
]


def recs_audit(settings: Settings, ds: date) -> tuple[pd.DataFrame, pd.DataFrame, int, int]:
    """The recs table, a per-user audit, the number of recommendable items and how many of them carry
    ``gates.coverage_head.share`` of the last week's engagement (:func:`engaged_head`).

    The audit has list length, duplicates, seen, unavailable, unknown and out-of-vocabulary items, and
    ``n_short``: how many items short of K the list is, beyond what the user could be given. A list may be
    shorter than K only when fewer than K items are recommendable to that user (available, not blocked,
    not already seen); that is the documented exception.
    """
    recs_arrow = pads.dataset(
        str(lake.require_partition(settings.lake, settings.recs_table, ds)), format="parquet"
    ).to_table()
    users = inputs.load_users(settings.lake, ds, "serve", settings.features.history_len)
    items = inputs.load_items(settings.lake, ds, "serve")
    # Vectorised over item and user positions: 1M users' lists are 20M rows against ~100M seen pairs, which
    # as Python tuples in sets took minutes and gigabytes.
    seen_pairs = inputs.load_interactions(settings.lake, ds, None, ds, settings.features, arrow=True)
    seen = inputs.build_seen(seen_pairs, users, items)
    n_items = max(len(items), 1)
    u = inputs.positions(recs_arrow["user_id"], users.user_id)
    i = inputs.positions(recs_arrow["item_id"], items.item_id)
    known = i >= 0
    blocked = np.isin(items.item_id, np.asarray(settings.scoring.blocklist, dtype=object))
    allowed = items.available.astype(bool) & ~blocked
    seen_rows, _ = seen.rows(0, len(users))
    seen_codes = seen_rows.astype(np.int64) * n_items + seen.indices
    n_allowed = int(allowed.sum())
    codes = np.where((u >= 0) & known, u.astype(np.int64) * n_items + i, -1)
    ii = np.where(known, i, 0)
    flags = {
        "n_seen": _in_sorted(codes, seen_codes),
        "n_unavailable": (known & ~allowed[ii])
        | pc.is_in(recs_arrow["item_id"], value_set=pa.array(settings.scoring.blocklist, pa.string()))
        .to_numpy(zero_copy_only=False)
        .astype(bool),
        "n_unknown_items": ~known,
        "n_oov_items": known & (items.item_idx[ii] == 0),
        "n_duplicates": _duplicated(recs_arrow),
    }
    # Every known user must be present: a missing user shows up as a row with no recommendations (lists of
    # users outside the user table are not audited, as before).
    mine = u >= 0
    audit = pd.DataFrame({"user_id": users.user_id})
    audit["n_recs"] = np.bincount(u[mine], minlength=len(users))
    for name, flag in flags.items():
        audit[name] = np.bincount(u[mine], weights=flag[mine], minlength=len(users)).astype(np.int64)
    audit = audit[["user_id", "n_recs", *flags]]
    seen_allowed = np.bincount(seen_rows, weights=allowed[seen.indices], minlength=len(users))
    can_get = np.clip(n_allowed - seen_allowed, 0, None)
    expected = np.minimum(settings.scoring.top_k, can_get)
    audit["n_short"] = np.clip(expected - audit["n_recs"].to_numpy(), 0, None)
    recs = recs_arrow.to_pandas()
    head = engaged_head(items.recent[allowed], settings.gates.coverage_head.share)
    return recs, audit.astype({c: np.int64 for c in audit.columns if c != "user_id"}), n_allowed, head


def coverage_floor(settings: Settings, n_allowed: int, head: int) -> tuple[float, str]:
    """The least catalog coverage the night's lists need, as a share of the ``n_allowed`` recommendable items,
    and why.

    ``gates.min_catalog_coverage`` of the catalog, or, where that is more than the recent engagement can
    support, ``coverage_head.min_coverage`` x the ``head`` recommendable items that carry
    ``coverage_head.share`` of the last 7 days' engagement.
    """
    g, head_rule = settings.gates, settings.gates.coverage_head
    flat = (g.min_catalog_coverage, f"{g.min_catalog_coverage:.0%} of the catalog")
    if n_allowed <= 0 or head == 0:
        return flat
    floor = head_rule.min_coverage * head / n_allowed
    if floor >= g.min_catalog_coverage:
        return flat
    return floor, (
        f"{head_rule.min_coverage:g} x the {head} items that carry {head_rule.share:.0%} of the last 7 days' "
        f"engagement; {g.min_catalog_coverage:.0%} of the catalog where engagement is spread wider"
    )


def engaged_head(engagement: np.ndarray, share: float) -> int:
    """How many of these items (their recent engagement) carry ``share`` of its total; 0 where there is none."""
    engagement = np.sort(engagement)[::-1]
    total = float(engagement.sum())
    if total <= 0:
        return 0
    # The tolerance keeps a cumulative sum that reaches the share only up to rounding on the item that reaches it.
    return int(np.searchsorted(np.cumsum(engagement), share * total * (1 - 1e-12)) + 1)


def _in_sorted(values: np.ndarray, ascending: np.ndarray) -> np.ndarray:
    """``np.isin(values, ascending)`` for a sorted ``ascending`` (a SeenIndex's codes are): a binary search per
    value, where np.isin hashed or sorted both sides (the L tier's whole audit, 20M list rows against 24M seen
    pairs: 94 s with np.isin and a hashed seen index, 28 s with this and a sorted one; bench/recs_audit.py)."""
    if not len(ascending):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(ascending, values), len(ascending) - 1)
    return ascending[at] == values


def _duplicated(recs: pa.Table) -> np.ndarray:
    """True for each (user_id, item_id) row that repeats an earlier one (the first stays False)."""
    if recs.num_rows == 0:
        return np.zeros(0, dtype=bool)
    keys = pc.binary_join_element_wise(recs["user_id"], recs["item_id"], "\x1f")
    codes = pc.dictionary_encode(keys).combine_chunks().indices.to_numpy()
    order = np.argsort(codes, kind="stable")
    repeat = np.zeros(len(codes), dtype=bool)
    repeat[order[1:]] = codes[order[1:]] == codes[order[:-1]]
    return repeat


def validate_recs(settings: Settings, ds: date) -> GateReport:
    """The recommendations contract, the per-user audit and catalog coverage; on success the run's gate
    statistics become history (every gate of the night has passed by then).

    For another channel than the default (``settings.channel``) the same rules judge that channel's lists
    against its own live snapshot; its change rules compare with past nights of the same policy, and its
    figures never become the night's history (that is the default channel's).
    """
    default = settings.channel == DEFAULT_CHANNEL
    docs = docs_dir(settings, ds)
    ctx = runner.get_context(settings.gx_root, docs)
    runner.name_runs(f"{ds.isoformat()}-recommendations" + ("" if default else f"-{settings.channel}"))
    recs, audit, n_allowed, head = recs_audit(settings, ds)
    path = str(lake.partition_path(settings.lake, settings.recs_table, ds))
    results = [
        runner.run_suite(ctx, expectations.to_suite(RECS), recs, engine="pandas", asset="recs"),
        runner.run_suite(
            ctx,
            expectations.recs_audit_suite(settings.scoring.top_k),
            audit,
            engine="pandas",
            asset="recs_audit",
            result_format="COMPLETE",
            index_columns=["user_id"],
        ),
    ]
    for r in results:
        r.failures = [f.model_copy(update={"table": "recs", "file": path}) for f in r.failures]
    n_items = int(recs["item_id"].nunique())
    coverage = profile.safe_ratio(n_items, n_allowed)
    g = settings.gates
    floor, why = coverage_floor(settings, n_allowed, head)
    cov = Check(
        "catalog_coverage", min(coverage, 1.0), floor, None, "fail", "recs", "item_id",
        f"{n_items} distinct items recommended out of {n_allowed} recommendable ({coverage:.2%}); "
        f"required >= {floor:.2%} ({why})",
    )  # fmt: skip
    lists = list_figures(settings, ds)
    tonight, policy = lists.new.metrics(), _policy_name(settings, ds)
    # Against nights of the same policy: a model gone degenerate is stopped, while a baseline that won the
    # promotion gate against the learned pair goes live (its lists are meant to differ).
    same = [h for h in history.load(settings.lake, ds, g.change.history_runs) if _same_policy(h, policy)]
    past = [h["recs"]["lists"] for h in same]
    changes, change_notes = change_checks(tonight, past, g.change, policy)
    results.append(run_checks(ctx, "recs_checks", [cov, *changes]))
    report = make_report(
        "recommendations" if default else f"recommendations-{settings.channel}", results, docs
    )
    results[-1].metrics |= {f"lists_{k}": v for k, v in tonight.items()}  # the night's figures, to MLflow too
    fallback = int(recs.loc[recs["source"] == "fallback", "user_id"].nunique())
    report.stats = {
        "rows": len(recs),
        "users": len(audit),
        "fallback_users": fallback,
        "coverage": coverage,
        "lists": tonight,
        "policy": policy,
        "compared_with": lists.live_key,
        "channel": settings.channel,
    }
    report.notes.append(f"{fallback} users got the cold-start fallback list")
    report.notes += change_notes
    # Written whatever the verdict: on a failed night it shows what the rules saw.
    page = night_report.render(
        night_report.NightReport(
            ds,
            policy,
            lists,
            history=[(h["ds"], h["recs"]["lists"]) for h in same],
            rules=[night_report.RuleRow(c.name, c.ok, c.action, c.explain) for c in changes],
            notes=change_notes,
            slices=_slices(settings, ds) if default else None,  # the slices are the live policy's
        )
    )
    report_path = lake.partition_path(settings.lake, settings.recs_table, ds) / lake.NIGHT_REPORT
    report_path.write_text(page)
    report.night_report = str(report_path)
    _record(settings, ds, report)
    if report.success and default:
        history.save_pending(settings.lake, ds, "recs", report.stats)
        history.commit(settings.lake, ds)
    return report


VALIDATION = lake.VERDICT


def _slices(settings: Settings, ds: date) -> SliceReport | None:
    path = lake.evaluation_path(settings.lake, ds) / lake.SLICES
    return SliceReport.model_validate_json(path.read_text()) if path.exists() else None


def _same_policy(night: dict, policy: str | None) -> bool:
    return "lists" in night.get("recs", {}) and night["recs"].get("policy") == policy


def _policy_name(settings: Settings, ds: date) -> str | None:
    """The name of the policy that made the lists (``learned``, ``ease``, ...), from the precompute's record."""
    meta = lake.partition_path(settings.lake, settings.recs_table, ds) / META
    if not meta.exists():
        return None
    return (json.loads(meta.read_text()).get("policy") or {}).get("name")


def _record(settings: Settings, ds: date, report: GateReport) -> None:
    """Leave the verdict beside the lists it judged; publish refuses lists without a passing one."""
    path = lake.partition_path(settings.lake, settings.recs_table, ds)
    marker = lake.read_marker(path) or {}
    body = report.summary().model_dump(mode="json") | {
        "recs_fingerprint": marker.get("fingerprint"),
        "recs_written_at": marker.get("written_at"),
    }
    (path / VALIDATION).write_text(json.dumps(body, indent=2, default=str))
