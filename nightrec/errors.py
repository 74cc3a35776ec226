"""Errors that say what is wrong and where."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from schemas.results import RuleFailure


def _rows(rows: Sequence[Any], limit: int = 5) -> str:
    shown = "\n".join(f"    {r}" for r in list(rows)[:limit])
    return f"\n  offending rows (up to {limit}):\n{shown}" if shown else ""


class NightrecError(Exception):
    """Base of all nightrec errors."""


class ContractViolation(NightrecError):
    """Input that does not match its contract: names the file, column, rule and a few offending rows."""

    def __init__(
        self,
        path: str,
        column: str | None,
        rule: str,
        sample_rows: Sequence[Any] = (),
        count: int | None = None,
    ):
        self.path, self.column, self.rule, self.sample_rows, self.count = (
            path,
            column,
            rule,
            list(sample_rows),
            count,
        )
        where = f"column {column!r} of " if column else ""
        n = f" ({count} rows)" if count is not None else ""
        super().__init__(f"contract violation in {where}{path}: {rule}{n}{_rows(self.sample_rows)}")


class GateFailed(NightrecError):
    """A data gate (Great Expectations suite or volume check) failed; nothing live was changed.

    Each failure is a ``RuleFailure``: the rule and, where known, its suite, table, file, column, count, a few
    offending rows and a detail.
    """

    def __init__(
        self,
        suite: str,
        failures: Sequence[RuleFailure],
        data_docs: str | None = None,
        source: str | None = None,
    ):
        self.suite, self.failures, self.data_docs, self.source = suite, list(failures), data_docs, source
        lines = [
            f"gate {suite!r} failed"
            + (f" on {source}" if source else "")
            + f": {len(failures)} rule(s) broken"
        ]
        for f in failures[:10]:
            lines.append(f"  - {f.line()}")
            if f.file:
                lines.append(f"      file: {f.file}")
            for r in f.rows[:5]:
                lines.append(f"      {r}")
        if len(failures) > 10:
            lines.append(f"  ... and {len(failures) - 10} more (see the Data Docs)")
        if data_docs:
            lines.append(f"  Data Docs: {data_docs}")
        super().__init__("\n".join(lines))

    def brief(self) -> str:
        """The message for a terminal, at most 9 lines: every rule on one line (up to three), the first one's
        file and two of its rows, then where the rest is (the Data Docs; the full message is in the log)."""
        head = f"gate {self.suite!r} failed" + (f" on {self.source}" if self.source else "")
        lines = [f"{head}: {len(self.failures)} rule(s) broken"]
        for i, f in enumerate(self.failures[:3]):
            lines.append(f"  - {f.line()}"[:400])
            if i == 0:
                if f.file:
                    lines.append(f"      file: {f.file}")
                lines += [f"      {r}"[:300] for r in f.rows[:2]]
        if len(self.failures) > 3:
            lines.append(f"  ... and {len(self.failures) - 3} more rule(s): see the Data Docs")
        if self.data_docs:
            lines.append(f"  Data Docs: {self.data_docs}")
        return "\n".join(lines)


class StageInputMissing(NightrecError):
    """A stage's input partition is absent or has no success marker (never read a half-written partition)."""


class DiskFull(NightrecError):
    """A write ran out of space (or quota, or the file size limit); nothing was marked complete or made live."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(
            f"no space writing {path}: {reason}. Nothing was marked complete or made live; free space (or raise "
            "the quota) and re-run: completed stages are skipped."
        )
