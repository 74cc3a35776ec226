"""The feature gate: contract suites on every feature table, plus vocabulary, null-rate, examples-per-user,
volume, new-id and drift checks against the last successful runs."""

from __future__ import annotations

from datetime import date
from functools import partial

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from nightrec.io import lake
from nightrec.settings import Settings
from nightrec.validation import history, profile, runner
from nightrec.validation.checks import (
    Check,
    contract_checks,
    contract_rules,
    drift_checks,
    run_check_suites,
    share_check,
    volume_checks,
)
from nightrec.validation.report import GateReport, docs_dir, make_report
from schemas import expectations
from schemas.rules import RowCountBetween
from schemas.spark import to_struct_type
from schemas.tables import FEATURE_TABLES

# Tables a night cannot train or evaluate without: empty fails the gate.
NOT_EMPTY = frozenset({"retrieval_examples", "ranking_examples", "interactions"})


def validate_features(spark: SparkSession, settings: Settings, ds: date) -> GateReport:
    """Contract suites on every feature table of ``ds``, plus vocabulary, null-rate, volume and drift checks."""
    g, docs = settings.gates, docs_dir(settings, ds)
    ctx = runner.get_context(settings.gx_root, docs)
    runner.name_runs(f"{ds.isoformat()}-features")
    frames, paths = {}, {}
    for name, table in FEATURE_TABLES.items():
        paths[name] = str(lake.require_partition(settings.lake, name, ds))
        frames[name] = spark.read.schema(to_struct_type(table)).parquet(paths[name]).select(*table.names)
    jobs = {name: partial(_contract_checks, frames[name], name, g.sample_rows) for name in FEATURE_TABLES}
    contracts = profile.concurrently({**jobs, "_stats": partial(feature_stats, frames, settings, ds)})
    stats = contracts.pop("_stats")
    past = history.load(settings.lake, ds, g.volume.history_runs)
    prev = past[0].get("features") if past else None
    # One GX run for the gate: the contracts (reported as one suite per table) and the checks.
    checks = feature_checks(stats, past, prev, g)
    results = run_check_suites(ctx, "feature_checks", {**contracts, "feature_checks": checks})
    for res in results[:-1]:
        res.metrics = {}  # offending-row counts are in the Data Docs; the gate's metrics stay the checks'
        res.failures = [f.model_copy(update={"file": paths[res.suite]}) for f in res.failures]
    report = make_report("features", results, docs)
    report.stats = stats
    if report.success:
        history.save_pending(settings.lake, ds, "features", stats)
    return report


def _contract_checks(frame: DataFrame, name: str, n: int) -> list[Check]:
    """The table's contract suite as checks: one aggregation pass plus a grouping per key; offending rows
    are fetched only for a broken rule."""
    table = FEATURE_TABLES[name]
    extra = [RowCountBetween(min_value=1)] if name in NOT_EMPTY else []
    rules = contract_rules(expectations.table_rules(table, extra=extra))
    conds = {r.metric: r.cond for r in rules if r.cond is not None}
    row = frame.agg(
        F.count(F.lit(1)).alias("_rows"), *[profile.count_where(c).alias(k) for k, c in conds.items()]
    ).first()
    found = {k: int(row[k] or 0) for k in conds}
    found |= {r.metric: profile.duplicate_key_rows(frame, r.key) for r in rules if r.key}
    return contract_checks(
        rules, found, int(row["_rows"]), frame.columns, name,
        lambda cond: profile.sample_where(frame, cond, n, frame.columns),
    )  # fmt: skip


def feature_stats(frames: dict, settings: Settings, ds: date) -> dict:
    """Row counts, vocabulary sizes, null rate, examples per user and the drift histograms of the features."""
    users = frames["user_features"].where(F.col("role") == "serve")
    train = frames["retrieval_examples"].where(F.col("split") == "train")
    u = users.agg(
        F.count(F.lit(1)).alias("n"), profile.count_where(F.col("days_since_last").isNull()).alias("nulls")
    )
    u = u.first()
    t = train.agg(F.count(F.lit(1)).alias("n"), F.countDistinct("user_idx").alias("users")).first()
    rows = {
        name: (lake.read_marker(lake.partition_path(settings.lake, name, ds)) or {}).get("rows")
        for name in FEATURE_TABLES
    }
    return {
        "rows": rows,
        "vocab": profile.histogram(frames["vocab"], "field"),
        "days_since_last_null_rate": profile.safe_ratio(u["nulls"] or 0, u["n"]),
        "examples_per_user": profile.safe_ratio(t["n"], t["users"]),
        "hist": {
            "engaged_category": profile.histogram(train, "category_idx"),
            "user_activity": profile.histogram(users, profile.log2_bucket("n_events")),
            "item_popularity": profile.histogram(
                frames["item_features"].where(F.col("role") == "serve"), "pop_bucket"
            ),
        },
    }


def feature_checks(stats: dict, past: list[dict], prev: dict | None, g) -> list[Check]:
    vocab = stats["vocab"]
    checks = [
        Check(
            f"vocab_{field}", vocab.get(field, 0), 1, None, "fail", "vocab", field,
            f"{vocab.get(field, 0)} {field} values in the vocabulary; need at least 1",
        )
        for field in ("user_id", "item_id", "category")
    ]  # fmt: skip
    checks.append(
        Check(
            "days_since_last_null_rate", stats["days_since_last_null_rate"], None,
            g.max_user_features_null_rate, "fail", "user_features", "days_since_last",
            f"{stats['days_since_last_null_rate']:.2%} of serving users have no engaged event "
            f"(days_since_last is null); allowed at most {g.max_user_features_null_rate:.2%}",
        )
    )  # fmt: skip
    checks.append(
        Check(
            "examples_per_user", stats["examples_per_user"], g.min_examples_per_user, None, "fail",
            "retrieval_examples", "user_idx",
            f"{stats['examples_per_user']:.2f} retrieval training examples per user; "
            f"need at least {g.min_examples_per_user:g}",
        )
    )  # fmt: skip
    if prev:
        for field, rule, what in (("user_id", g.new_users, "users"), ("item_id", g.new_items, "items")):
            now, before = vocab.get(field, 0), prev["vocab"].get(field, 0)
            checks.append(
                share_check(
                    f"new_{what}_share", max(now - before, 0), now, rule, "vocab", field,
                    f"are new {what} since the previous successful run",
                )
            )  # fmt: skip
    past_rows = [h["features"]["rows"]["interactions"] for h in past if "features" in h]
    checks += volume_checks(
        "interactions", stats["rows"]["interactions"] or 0, past_rows, g.volume, "interactions",
        "deduplicated interactions",
    )  # fmt: skip
    checks += drift_checks(stats["hist"], prev and prev.get("hist"), g.drift, "features")
    return checks
