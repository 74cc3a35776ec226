"""The raw gate: contract suites on events, items and users as read, plus quarantine, share, volume,
null-rate and event-mix drift checks against the last successful runs."""

from __future__ import annotations

from datetime import date, timedelta
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from nightrec.errors import ContractViolation
from nightrec.features.events import ts_of
from nightrec.io import raw
from nightrec.settings import Settings
from nightrec.validation import history, profile, quarantine, runner
from nightrec.validation.checks import (
    Check,
    ContractRule,
    contract_checks,
    contract_rules,
    drift_checks,
    run_check_suites,
    share_check,
    volume_checks,
)
from nightrec.validation.report import GateReport, docs_dir, make_report
from schemas import expectations
from schemas.results import RuleFailure
from schemas.rules import Between
from schemas.tables import RAW_TABLES


def _read_failure(name: str, e: ContractViolation) -> runner.SuiteResult:
    failure = RuleFailure(
        rule=e.rule, table=name, column=e.column, file=e.path, rows=list(e.sample_rows or [])
    )
    return runner.SuiteResult(f"raw_{name}_read", False, [failure])


def validate_raw(
    spark: SparkSession, raw_root: str | Path, settings: Settings, ds: date, backfill: bool = False
) -> GateReport:
    """Contract suites and aggregate checks on events, items and users as read for run date ``ds``.

    ``backfill``: ``ds`` is a past date on a log that goes on after it, so events on or after ``ds`` are
    expected: counted in the notes, not held against the timestamp rule (which still covers ``data_start``).

    Malformed CSV and JSON Lines rows are quarantined (and the gate fails when there are too many); volume,
    null-rate and event-mix drift are compared with the last successful runs (``_gate_stats``).
    """
    docs = docs_dir(settings, ds)
    ctx = runner.get_context(settings.gx_root, docs)
    runner.name_runs(f"{ds.isoformat()}-raw")
    checked, results = {}, []
    for name in RAW_TABLES:
        try:
            df = raw.read_raw_checked(spark, raw_root, name)
            # Parquet scans read only the columns each pass needs, faster than building a full cache;
            # CSV and JSON Lines are parsed once and kept.
            fmt, _ = raw.table_files(Path(raw_root), RAW_TABLES[name])
            checked[name] = df.persist(StorageLevel.MEMORY_AND_DISK) if fmt != "parquet" else df
        except ContractViolation as e:
            results.append(_read_failure(name, e))
    if results:
        _unpersist(checked)
        return make_report("raw", results, docs)
    try:
        report = _validate_raw_frames(ctx, checked, settings, ds, docs, backfill)
    finally:
        _unpersist(checked)
    report.results.append(_extra_columns(raw_root))
    return report


def _extra_columns(raw_root: str | Path) -> runner.SuiteResult:
    """Columns beyond the contract are ignored by the reader; say so instead of failing."""
    warnings = []
    for name, table in RAW_TABLES.items():
        fmt, files = raw.table_files(Path(raw_root), table)
        if fmt != "parquet":
            continue
        for f in files:
            extra = sorted(set(pq.read_schema(f).names) - set(table.names))
            if extra:
                warnings.append(
                    RuleFailure(
                        rule="extra_columns", table=name, file=str(f),
                        detail=f"{f} has columns outside the contract of {name} (ignored): {extra}",
                    )
                )  # fmt: skip
                break
    return runner.SuiteResult("raw_schema", True, warnings=warnings)


def _unpersist(frames: dict) -> None:
    for df in frames.values():
        df.unpersist()


def _contract(settings: Settings) -> dict[str, list[ContractRule]]:
    """Each raw table's contract suite (from ``schemas``), folded into rules its aggregation pass counts."""
    extra = {"events": [Between("value", 0, settings.gates.max_event_value)]}
    allowed = {"event_type": settings.event_types}
    return {
        name: contract_rules(expectations.table_rules(table, allowed, extra.get(name, ())))
        for name, table in RAW_TABLES.items()
    }


def _count_raw(
    checked: dict, good: dict, rules: dict, settings: Settings, ds: date
) -> tuple[dict, dict, dict]:
    """Table counts, event statistics and contract offending rows: one aggregation job per table (the
    events' with its one shuffle), plus a grouping per key of the small tables, all submitted together."""
    g = settings.gates
    conds = {name: {r.metric: r.cond for r in rs if r.cond is not None} for name, rs in rules.items()}
    jobs = {
        name: partial(profile.table_counts, checked[name], name, conds[name]) for name in ("items", "users")
    }
    jobs["events"] = partial(
        profile.event_counts, checked["events"], good["items"], ds, g.data_start, g.max_event_value,
        settings.event_types, conds["events"],
    )  # fmt: skip
    keys = [(name, r) for name, rs in rules.items() for r in rs if r.key]
    jobs |= {
        f"key:{name}:{r.metric}": partial(profile.duplicate_key_rows, good[name], r.key) for name, r in keys
    }
    done = profile.concurrently(jobs)
    counts = {name: done[name][0] for name in ("items", "users")}
    found = {name: done[name][1] for name in ("items", "users")}
    counts["events"], ev, found["events"] = done["events"]
    for name, r in keys:
        found[name][r.metric] = done[f"key:{name}:{r.metric}"]
    return {name: counts[name] for name in RAW_TABLES}, ev, found


def _validate_raw_frames(
    ctx, checked: dict, settings: Settings, ds: date, docs: str, backfill: bool = False
) -> GateReport:
    g, n = settings.gates, settings.gates.sample_rows
    good = {k: v.where(F.col(raw.REASON).isNull()) for k, v in checked.items()}
    checks, notes, contracts = [], [], {}
    rules = _contract(settings)
    counts, ev, found = _count_raw(checked, good, rules, settings, ds)
    for name, table in RAW_TABLES.items():
        # The contract suite, as metrics of the pass above (offending rows fetched on failure only).
        contracts[name] = contract_checks(
            rules[name], found[name], counts[name]["rows"], list(table.names), name,
            lambda cond, df=checked[name]: profile.sample_where(df, cond & F.col(raw.REASON).isNull(), n),
        )  # fmt: skip
        c = counts[name]
        total = c["rows"] + c["malformed"]
        checks.append(
            share_check(
                f"{name}_malformed_share", c["malformed"], total, g.quarantine, name, None,
                "are malformed (quarantined)", lambda df=checked[name]: profile.sample_malformed(df, n),
            )
        )  # fmt: skip
        if c["malformed"]:
            path = quarantine.write(checked[name], settings.lake, ds, name)
            notes.append(f"{c['malformed']} malformed {name} rows quarantined to {path}")
    n_events = counts["events"]["rows"]
    checks += _event_checks(ev, n_events, good, settings, ds, backfill)
    checks.append(
        Check(
            "available_item_share",
            profile.safe_ratio(counts["items"]["available"], counts["items"]["rows"]),
            g.min_available_items, None, "fail", "items", "available",
            f"{counts['items']['available']} of {counts['items']['rows']} items are available; "
            f"required share >= {g.min_available_items:.2%}",
        )
    )  # fmt: skip
    past = history.load(settings.lake, ds, g.volume.history_runs)
    prev = past[0].get("raw") if past else None
    checks += _null_jump_checks(counts, prev, g)
    checks += volume_checks(
        "events_last_day", ev["events_last_day"],
        [h["raw"]["events"]["events_last_day"] for h in past if "raw" in h], g.volume, "events",
        f"events for ds={(ds - timedelta(days=1)).isoformat()}", g.volume.min_events_last_day,
    )  # fmt: skip
    checks += volume_checks(
        "events_total", n_events, [h["raw"]["tables"]["events"]["rows"] for h in past if "raw" in h],
        g.volume, "events", "events in total",
    )  # fmt: skip
    checks += drift_checks(ev["hist"], prev and prev.get("hist"), g.drift, "events")
    # One GX run for the gate: the contracts (reported as suites events, items, users) and the checks.
    results = run_check_suites(ctx, "raw_checks", {**contracts, "raw_checks": checks})
    for res in results[:-1]:
        res.metrics = {}  # offending-row counts are in the Data Docs; the gate's metrics stay the checks'
    if ev["duplicates"]:
        notes.append(f"{ev['duplicates']} duplicate events (replays) will be dropped by build_features")
    if ev["out_of_range_ts"]:
        notes.append(
            f"{ev['out_of_range_ts']} events outside [{g.data_start}, {ds}) ({ev['future_ts']} after the run "
            "date) will not reach features"
        )
    if ev["unknown_items"]:
        notes.append(f"{ev['unknown_items']} events of items unknown to the catalog will be dropped")
    stats = {"tables": counts, "events": {k: v for k, v in ev.items() if k != "hist"}, "hist": ev["hist"]}
    report = make_report("raw", results, docs)
    report.notes, report.stats = notes, stats
    if report.success:
        history.save_pending(settings.lake, ds, "raw", stats)
    return report


def _event_checks(
    ev: dict, n_events: int, good: dict, settings: Settings, ds: date, backfill: bool = False
) -> list[Check]:
    g, n = settings.gates, settings.gates.sample_rows
    events, items = good["events"], good["items"]
    start, stop = ts_of(g.data_start), ts_of(ds)
    out_of_range = (F.col("ts") < F.lit(start)) | (F.col("ts") >= F.lit(stop))
    counted = ev["out_of_range_ts"]
    if backfill:  # the days after a backfilled date are expected; only data before data_start is wrong
        out_of_range, counted = F.col("ts") < F.lit(start), counted - ev["future_ts"]
    return [
        share_check(
            "out_of_range_ts_share", counted, n_events, g.out_of_range_ts, "events", "ts",
            f"have ts outside [{g.data_start}, {ds}): events on or after the run date are in the future (for a "
            "past date on a longer log, run it as a backfill: nightrec run --backfill); for older data lower "
            "gates.data_start (NIGHTREC_GATES__DATA_START=YYYY-MM-DD)",
            lambda: profile.sample_where(events, out_of_range, n, ["user_id", "item_id", "event_type", "ts"]),
        ),
        share_check(
            "duplicate_share", ev["duplicates"], n_events, g.duplicates, "events", None,
            "are exact duplicates (user_id, item_id, event_type, ts)",
            lambda: profile.sample_duplicates(events, n),
        ),
        share_check(
            "unknown_item_share", ev["unknown_items"], n_events, g.unknown_items, "events", "item_id",
            "refer to items missing from the catalog", lambda: profile.sample_unknown_items(events, items, n),
        ),
    ]  # fmt: skip


def _null_jump_checks(counts: dict, prev: dict | None, g) -> list[Check]:
    if not prev:
        return []
    out = []
    for name, c in counts.items():
        before = prev["tables"].get(name, {}).get("null_rate", {})
        for col, rate in c["null_rate"].items():
            if col not in before:
                continue
            out.append(
                Check(
                    f"null_jump_{name}_{col}", rate - before[col], None, g.null_rate_jump.max_share,
                    g.null_rate_jump.action, name, col,
                    f"null rate of {name}.{col} went from {before[col]:.2%} to {rate:.2%} "
                    f"(allowed increase {g.null_rate_jump.max_share:.2%})",
                )
            )  # fmt: skip
    return out
