"""Aggregate checks (shares, volume, drift) expressed as a Great Expectations suite over one row of metrics.

The heavy lifting is one Spark aggregation per table; what GX validates is a one-row frame of metrics, so the
checks cost nothing extra, show up in the Data Docs beside the contract suites, and keep their own threshold
and ``fail``/``warn`` action. Row-level detail (offending rows with their file) is fetched only for a failed
check, through its ``sample`` callable.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from pyspark.sql import Column as SparkColumn

from nightrec.gate_settings import Action, DriftRule, ShareRule, VolumeSettings
from nightrec.validation import runner
from schemas.results import RuleFailure
from schemas.rules import Rule


@dataclass
class Check:
    """One metric of this run with its allowed range, the rule's action and how to explain it."""

    name: str
    value: float
    min_value: float | None
    max_value: float | None
    action: Action
    table: str
    column: str | None
    explain: str
    count: int | None = None
    sample: Callable[[], list[dict]] | None = field(default=None, repr=False)
    # The rule a failure is reported under when it differs from the metric's name (a contract expectation).
    rule: str | None = None

    @property
    def ok(self) -> bool:
        lo = self.min_value is None or self.value >= self.min_value
        hi = self.max_value is None or self.value <= self.max_value
        return lo and hi and not math.isnan(self.value)


def share_check(
    name: str, count: int, total: int, rule: ShareRule, table: str, column: str | None, what: str, sample=None
) -> Check:
    share = count / total if total else 0.0
    return Check(
        name,
        share,
        None,
        rule.max_share,
        rule.action,
        table,
        column,
        f"{count} of {total} rows ({share:.2%}) {what}; allowed at most {rule.max_share:.2%}",
        count,
        sample,
    )


def volume_checks(
    name: str, value: int, past: list[int], cfg: VolumeSettings, table: str, what: str, floor: int = 0
) -> list[Check]:
    """``value`` against the median of past runs: a low and a high rule, each with its own action."""
    if not past:
        return [
            Check(
                f"{name}_low",
                value,
                floor,
                None,
                cfg.low_action,
                table,
                None,
                f"{value} {what}, expected >= {floor} (no successful night before this run date to compare with)",
                value,
            )
        ]
    med = statistics.median(past)
    lo, hi = med * cfg.min_ratio, med * cfg.max_ratio
    basis = f"{len(past)}-run median {med:g}"
    return [
        Check(
            f"{name}_low", value, lo, None, cfg.low_action, table, None,
            f"{value} {what}, expected >= {lo:g} ({cfg.min_ratio:g} x {basis})", value,
        ),
        Check(
            f"{name}_high", value, None, hi, cfg.high_action, table, None,
            f"{value} {what}, expected <= {hi:g} ({cfg.max_ratio:g} x {basis})", value,
        ),
    ]  # fmt: skip


def psi(current: dict[str, float], reference: dict[str, float], eps: float = 1e-4) -> float:
    """Population stability index of two histograms (counts by bucket); 0 = identical."""
    cur_n, ref_n = sum(current.values()), sum(reference.values())
    if not cur_n or not ref_n:
        return 0.0 if cur_n == ref_n else math.inf
    total = 0.0
    for k in set(current) | set(reference):
        p = max(current.get(k, 0) / cur_n, eps)
        q = max(reference.get(k, 0) / ref_n, eps)
        total += (p - q) * math.log(p / q)
    return total


def drift_checks(
    hists: dict[str, dict], previous: dict[str, dict] | None, rules: dict[str, DriftRule], table: str
) -> list[Check]:
    """PSI of each configured feature's histogram against the previous successful run's."""
    out = []
    for feature, rule in rules.items():
        if feature not in hists or not previous or feature not in previous:
            continue
        value = psi(hists[feature], previous[feature])
        out.append(
            Check(
                f"psi_{feature}",
                min(value, 1e6),
                None,
                rule.threshold,
                rule.action,
                table,
                feature,
                f"feature {feature!r}: PSI {value:.3f} against the previous successful run "
                f"(threshold {rule.threshold:g}, action {rule.action})",
            )
        )
    return out


@dataclass(frozen=True)
class ContractRule:
    """One rule of a contract folded into an aggregation: its ``metric`` counts the rows breaking it."""

    rule: Rule
    metric: str

    @property
    def cond(self) -> SparkColumn | None:
        return self.rule.offending()

    @property
    def key(self) -> tuple[str, ...]:
        return self.rule.key


def contract_rules(rules: Sequence[Rule]) -> list[ContractRule]:
    """A table's contract (``schemas.expectations.table_rules``) with the metric name each rule counts under,
    for one aggregation pass instead of GX's jobs per suite."""
    out = []
    for i, r in enumerate(rules):
        col = r.column if isinstance(r.column, str) else ""
        out.append(
            ContractRule(r, f"{i:02d}__{r.expectation_type.removeprefix('expect_')}__{col}".rstrip("_"))
        )
    return out


def contract_checks(
    rules: list[ContractRule],
    values: dict[str, int],
    rows: int,
    columns: list[str],
    table: str,
    sample: Callable[[SparkColumn], list[dict]] | None = None,
) -> list[Check]:
    """The folded rules as ``Check``s (every one a ``fail`` rule), reported under their expectation's name.

    Args:
        values: Offending row count by ``metric`` for row-level and uniqueness rules.
        rows: The table's row count; ``columns``: its columns as read.
        sample: Offending rows (with their file where known) of a row-level rule's condition.
    """
    out = []
    for r in rules:
        table_level = r.rule.table_value(rows, columns)
        value, lo, hi = table_level if table_level else (int(values.get(r.metric) or 0), None, 0)
        cond = r.cond
        fetch = (lambda cond=cond: sample(cond)) if sample is not None and cond is not None else None
        out.append(
            Check(
                r.metric,
                value,
                lo,
                hi,
                "fail",
                table,
                r.rule.column,
                r.rule.explain(int(value), rows),
                int(value),
                fetch,
                r.rule.expectation_type,
            )
        )
    return out


def observed_text(c: Check) -> str:
    """The Data Docs' "Observed Value" of a check: the measured figure against its bound."""
    if c.min_value is not None and c.max_value is not None:
        bound = f"allowed {c.min_value:.4g} to {c.max_value:.4g}"
    elif c.min_value is not None:
        bound = f"min {c.min_value:.4g}"
    elif c.max_value is not None:
        bound = f"max {c.max_value:.4g}"
    else:
        return f"{c.value:.4g}"
    return f"{c.value:.4g} ({bound})"


def run_checks(ctx, suite_name: str, checks: list[Check]) -> runner.SuiteResult:
    """Validate the metrics with GX (for the Data Docs) and report broken ``fail`` rules as failures.

    Returns:
        SuiteResult whose ``success`` ignores ``warn`` rules; those are in ``warnings``.
    """
    return run_check_suites(ctx, suite_name, {suite_name: checks})[0]


def run_check_suites(ctx, gx_suite: str, suites: dict[str, list[Check]]) -> list[runner.SuiteResult]:
    """Validate several suites of metrics in one GX run (one page in the Data Docs) and report each apart.

    A GX run has a fixed cost (checkpoint, validation store, Data Docs page; about 0.35 s) whatever the size
    of its one-row frame: a gate validates all its folded contracts and checks in one run.

    Args:
        gx_suite: The GX suite (and asset) holding every metric.
        suites: Checks by the suite name failures are reported under (``[events] expect_...``).

    Returns:
        One SuiteResult per entry of ``suites``, in order; ``success`` ignores ``warn`` rules.
    """
    named = [
        (f"{suite}__{c.name}" if suite != gx_suite else c.name, c) for suite, cs in suites.items() for c in cs
    ]
    frame = pd.DataFrame([{name: float(c.value) for name, c in named}])
    exps = [
        gxe.ExpectColumnMaxToBeBetween(
            column=name,
            min_value=c.min_value,
            max_value=c.max_value,
            severity="critical" if c.action == "fail" else "warning",
            description=c.explain,
        )
        for name, c in named
        if c.min_value is not None or c.max_value is not None
    ]
    res = runner.run_suite(
        ctx,
        gx.ExpectationSuite(name=gx_suite, expectations=exps),
        frame,
        engine="pandas",
        asset=gx_suite,
        observed={name: observed_text(c) for name, c in named},
    )
    out = []
    for suite, checks in suites.items():
        failures, warnings = [], []
        for c in checks:
            if c.ok:
                continue
            rows = c.sample() if c.sample and c.action == "fail" else []
            entry = RuleFailure(
                rule=c.rule or c.name,
                table=c.table,
                column=c.column,
                count=c.count,
                rows=rows,
                detail=c.explain,
                file=rows[0].get("_file") if rows else None,
            )
            (failures if c.action == "fail" else warnings).append(entry)
        bounded = [c for c in checks if c.min_value is not None or c.max_value is not None]
        ok = sum(c.ok for c in bounded)
        stats = {
            "evaluated_expectations": len(bounded),
            "successful_expectations": ok,
            "unsuccessful_expectations": len(bounded) - ok,
            "success_percent": 100.0 * ok / len(bounded) if bounded else None,
        }
        out.append(
            runner.SuiteResult(
                suite,
                not failures,
                failures,
                stats if len(suites) > 1 else res.statistics,
                res.data_docs,
                warnings,
                {c.name: c.value for c in checks},
            )  # fmt: skip
        )
    return out
