"""What a gate returns: the suites' results, warnings, notes, statistics and the run's Data Docs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from nightrec import faults
from nightrec.errors import GateFailed
from nightrec.settings import Settings
from nightrec.validation import runner
from schemas.results import GateSummary, RuleFailure


@dataclass
class GateReport:
    gate: str
    success: bool
    results: list[runner.SuiteResult] = field(default_factory=list)
    data_docs: str | None = None
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    night_report: str | None = None  # the recs gate's HTML report of the lists

    @property
    def warnings(self) -> list[RuleFailure]:
        return [w.model_copy(update={"suite": r.suite}) for r in self.results for w in r.warnings]

    def summary(self) -> GateSummary:
        return GateSummary(
            gate=self.gate,
            success=self.success,
            suites={r.suite: {"success": r.success, **r.statistics} for r in self.results},
            warnings=[f"{w.rule}: {w.detail}" for w in self.warnings],
            notes=self.notes,
            metrics={k: v for r in self.results for k, v in r.metrics.items()},
            data_docs=self.data_docs,
            report=self.night_report,
        )

    def raise_if_failed(self, source: str | None = None) -> None:
        if self.success:
            return
        failures = [
            f.model_copy(update={"suite": r.suite}) for r in self.results if not r.success for f in r.failures
        ]
        raise GateFailed(self.gate, failures, self.data_docs, source)


def docs_dir(settings: Settings, ds: date) -> str:
    """The run's own Data Docs site: one static HTML folder per run date."""
    return str(Path(settings.data_docs) / f"ds={ds.isoformat()}")


def make_report(gate: str, results: list[runner.SuiteResult], docs: str) -> GateReport:
    faults.fault("gate.before_report", target=gate)  # suites run, the verdict and its Data Docs not written
    index = Path(docs) / "index.html"
    success = all(r.success for r in results)
    runner.make_site_offline(docs)
    runner.record_verdict(docs, gate, success)
    runner.write_root_index(Path(docs).parent)
    return GateReport(gate, success, results, str(index) if index.exists() else docs)
