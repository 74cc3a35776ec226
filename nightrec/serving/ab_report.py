"""What an online A/B experiment measured: exposures joined with the engagement that followed them.

An exposure (``nightrec.serving.exposures``) is one list served to a user in a variant. It is *clicked* when
the user engages (an event type whose weight is > 0: clicks, carts, purchases, good ratings, ...) with one of
its items within ``horizon`` after it was served. Per variant, over users (the unit that was randomised, so
the intervals are honest about users who see many lists):

- CTR: the mean over users of their clicked share of exposures;
- conversion: the share of users with at least one clicked exposure;
- NDCG@K of the served lists, relevance = the items the user engaged with within the horizon.

Each with a 95% interval, and each variant against the first (control) with the difference's 95% interval
(Welch). A sample-ratio-mismatch check compares the users per variant with the traffic split (chi-square;
p < 0.001 means the assignment or the logging is broken and the differences are not to be trusted).
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from scipy import stats

from nightrec.errors import ContractViolation
from nightrec.io import raw
from nightrec.serving import exposures as exposure_log
from nightrec.serving.experiments import load_experiments
from nightrec.settings import FeatureSettings, Settings
from schemas.results import AbReportWritten, AbVariant
from schemas.tables import EVENTS

Z95 = 1.959963984540054
SRM_P = 0.001


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float

    def text(self, digits: int = 4) -> str:
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@dataclass(frozen=True)
class VariantStats:
    variant: str
    users: int
    exposures: int
    ctr: Estimate
    conversion: Estimate
    ndcg: Estimate
    ctr_diff: Estimate | None = None  # against control
    conversion_diff: Estimate | None = None
    ndcg_diff: Estimate | None = None


@dataclass(frozen=True)
class AbReport:
    experiment: str
    horizon: timedelta
    variants: list[VariantStats]
    srm_p: float
    expected_shares: dict[str, float]
    first: str = ""
    last: str = ""
    events_used: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def srm(self) -> bool:
        return self.srm_p < SRM_P


def _mean_ci(x: np.ndarray) -> Estimate:
    n = len(x)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan)
    m = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    return Estimate(m, m - Z95 * se, m + Z95 * se)


def _diff_ci(a: np.ndarray, b: np.ndarray) -> Estimate:
    """b - a, Welch."""
    if len(a) < 2 or len(b) < 2:
        return Estimate(math.nan, math.nan, math.nan)
    d = float(b.mean() - a.mean())
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return Estimate(d, d - Z95 * se, d + Z95 * se)


def analyse(
    experiment: str,
    exposures: pd.DataFrame,
    events: pd.DataFrame,
    *,
    horizon: timedelta = timedelta(hours=24),
    shares: dict[str, float] | None = None,
) -> AbReport:
    """The experiment's per-variant figures.

    Args:
        experiment: Its name (exposures of other experiments are ignored).
        exposures: ts (UTC), user_id, experiment, variant, items (list, best first).
        events: ts (UTC), user_id, item_id: engagement events only (the caller keeps weight > 0 types).
        horizon: How long after an exposure an engagement counts for it.
        shares: variant -> its expected share of users (the experiment's weights, in its order: the first
            is the control the others are compared with); default: equal, in name order.

    Raises:
        ValueError: no exposure of ``experiment``.
    """
    exp = exposures[exposures["experiment"] == experiment].reset_index(drop=True)
    if exp.empty:
        raise ValueError(f"no exposure of experiment {experiment!r} in the log")
    exp = exp.assign(exposure=np.arange(len(exp)), ts=pd.to_datetime(exp["ts"], utc=True))
    order = list(shares) if shares else sorted(exp["variant"].unique())
    order += sorted(set(exp["variant"]) - set(order))
    shown = exp[["exposure", "user_id", "ts", "items"]].explode("items").rename(columns={"items": "item_id"})
    shown = shown.dropna(subset=["item_id"])
    shown["rank"] = shown.groupby("exposure").cumcount() + 1
    ev = events[events["user_id"].isin(set(exp["user_id"]))][["user_id", "item_id", "ts"]].copy()
    ev["ts"] = pd.to_datetime(ev["ts"], utc=True)
    # Relevant to an exposure: items the user engaged with within (ts, ts + horizon].
    per_user = exp[["exposure", "user_id", "ts"]].merge(ev, on="user_id", suffixes=("", "_event"))
    window = (per_user["ts_event"] > per_user["ts"]) & (per_user["ts_event"] <= per_user["ts"] + horizon)
    relevant = per_user[window][["exposure", "item_id"]].drop_duplicates()
    hits = shown.merge(relevant, on=["exposure", "item_id"])
    gains = (1.0 / np.log2(hits["rank"].to_numpy() + 1.0)) if len(hits) else np.zeros(0)
    dcg = pd.Series(gains, index=hits["exposure"].to_numpy()).groupby(level=0).sum()
    n_rel = relevant.groupby("exposure").size()
    k = exp["items"].map(len).to_numpy()
    discounts = np.cumsum(1.0 / np.log2(np.arange(2, int(k.max(initial=0)) + 2)))
    ideal = np.minimum(n_rel.reindex(exp["exposure"], fill_value=0).to_numpy(), k)
    idcg = np.where(ideal > 0, discounts[np.maximum(ideal - 1, 0)] if len(discounts) else 0.0, 0.0)
    exp["clicked"] = exp["exposure"].isin(set(hits["exposure"])).astype(float)
    dcg_per_exposure = dcg.reindex(exp["exposure"], fill_value=0.0).to_numpy()
    exp["ndcg"] = np.divide(dcg_per_exposure, idcg, out=np.zeros(len(exp)), where=idcg > 0)
    users = exp.groupby(["variant", "user_id"]).agg(ctr=("clicked", "mean"), ndcg=("ndcg", "mean"))
    users["converted"] = (users["ctr"] > 0).astype(float)
    out: list[VariantStats] = []
    base = users.loc[order[0]] if order[0] in users.index.get_level_values(0) else None
    for v in order:
        if v not in users.index.get_level_values(0):
            out.append(VariantStats(v, 0, 0, *(Estimate(math.nan, math.nan, math.nan),) * 3))
            continue
        u = users.loc[v]
        row = {
            "ctr": _mean_ci(u["ctr"].to_numpy()),
            "conversion": _mean_ci(u["converted"].to_numpy()),
            "ndcg": _mean_ci(u["ndcg"].to_numpy()),
        }
        diffs = {}
        if base is not None and v != order[0]:
            diffs = {
                f"{m}_diff": _diff_ci(base[col].to_numpy(), u[col].to_numpy())
                for m, col in (("ctr", "ctr"), ("conversion", "converted"), ("ndcg", "ndcg"))
            }
        out.append(VariantStats(v, len(u), int((exp["variant"] == v).sum()), **row, **diffs))
    expected = shares or dict.fromkeys(order, 1.0)
    total = sum(expected.get(v, 0.0) for v in order)
    observed = np.array([s.users for s in out], dtype=float)
    want = np.array([expected.get(v, 0.0) / total for v in order]) * observed.sum()
    srm_p = float(stats.chisquare(observed, want).pvalue) if len(order) > 1 and (want > 0).all() else 1.0
    return AbReport(
        experiment,
        horizon,
        out,
        srm_p,
        {v: expected.get(v, 0.0) / total for v in order},
        first=str(exp["ts"].min()),
        last=str(exp["ts"].max()),
        events_used=int(window.sum()),
    )


def markdown(report: AbReport) -> str:
    """The headline table (a Prefect artifact)."""
    control = report.variants[0].variant
    lines = [
        f"## A/B experiment `{report.experiment}`",
        "",
        f"Exposures {report.first} to {report.last}; an engagement counts within "
        f"{report.horizon.total_seconds() / 3600:g} h of the list it followed. Intervals are 95%, over users.",
        "",
        f"| variant | users | exposures | CTR | vs {control} | conversion | vs {control} | NDCG@K | vs {control} |",
        "| --- | ---: | ---: | --- | --- | --- | --- | --- | --- |",
    ]
    for s in report.variants:
        diff = lambda e: e.text() if e else "-"  # noqa: E731
        lines.append(
            f"| {s.variant} | {s.users:,} | {s.exposures:,} | {s.ctr.text()} | {diff(s.ctr_diff)} | "
            f"{s.conversion.text()} | {diff(s.conversion_diff)} | {s.ndcg.text()} | {diff(s.ndcg_diff)} |"
        )
    expected = ", ".join(f"{v} {p:.1%}" for v, p in report.expected_shares.items())
    verdict = (
        f"**sample ratio mismatch** (p = {report.srm_p:.2g} < {SRM_P}): users per variant do not match the "
        f"split ({expected}); check assignment and logging before reading the differences"
        if report.srm
        else f"no sample ratio mismatch (p = {report.srm_p:.2g}; split {expected})"
    )
    return "\n".join([*lines, "", f"Sample ratio: {verdict}."])


def chart_png(report: AbReport) -> bytes:
    """CTR, conversion and NDCG per variant with their 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    names = [s.variant for s in report.variants]
    for ax, metric, title in zip(
        axes, ("ctr", "conversion", "ndcg"), ("CTR", "conversion", "NDCG@K"), strict=True
    ):
        est = [getattr(s, metric) for s in report.variants]
        means = np.array([e.mean for e in est])
        err = np.array([[e.mean - e.low for e in est], [e.high - e.mean for e in est]])
        ax.bar(
            names,
            means,
            yerr=err,
            capsize=6,
            color=["#8c8c8c", "#2b6cb0", "#c05621", "#2f855a"][: len(names)],
        )
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"A/B experiment {report.experiment} (95% intervals over users)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def render_html(report: AbReport, png: bytes) -> str:
    """A self-contained page: the verdict, the table, the chart (no CDN)."""
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(c))}</td>"
            for c in (
                s.variant,
                f"{s.users:,}",
                f"{s.exposures:,}",
                s.ctr.text(),
                s.ctr_diff.text() if s.ctr_diff else "-",
                s.conversion.text(),
                s.ndcg.text(),
                s.ndcg_diff.text() if s.ndcg_diff else "-",
            )
        )
        + "</tr>"
        for s in report.variants
    )
    srm = (
        f'<p class="bad">Sample ratio mismatch: p = {report.srm_p:.2g}. Do not trust the differences.</p>'
        if report.srm
        else f"<p>No sample ratio mismatch (p = {report.srm_p:.2g}).</p>"
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>A/B {html.escape(report.experiment)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}.bad{{color:#b00;font-weight:bold}}</style>
</head><body><h1>A/B experiment {html.escape(report.experiment)}</h1>
<p>Exposures {html.escape(report.first)} to {html.escape(report.last)}; engagement within
{report.horizon.total_seconds() / 3600:g} h of a list counts for it. 95% intervals over users; differences
against {html.escape(report.variants[0].variant)} (Welch).</p>{srm}
<table><tr><th>variant</th><th>users</th><th>exposures</th><th>CTR</th><th>CTR diff</th><th>conversion</th>
<th>NDCG@K</th><th>NDCG diff</th></tr>{rows}</table>
<p><img alt="CTR, conversion and NDCG per variant" src="data:image/png;base64,{base64.b64encode(png).decode()}"></p>
</body></html>"""


def read_engagements(path: str | Path, features: FeatureSettings) -> pd.DataFrame:
    """The engagement events (weight > 0; ratings at or above ``min_rating``) of a raw events table.

    ``path``: a raw data root (with ``events/``), an events folder, or one file (Parquet, CSV or JSON Lines).

    Raises:
        ContractViolation: no events found, or a required column is missing (names the file).
    """
    p = Path(path)
    if (p / EVENTS.name).is_dir():
        fmt, files = raw.table_files(p, EVENTS)
    elif p.is_dir():
        fmt, files = raw.table_files(p.parent, EVENTS) if p.name == EVENTS.name else ("", [])
        if not files:
            for f in raw.FORMATS:
                files = sorted(x for x in p.rglob(f"*.{f}") if not x.name.startswith((".", "_")))
                if files:
                    fmt = f
                    break
    else:
        fmt, files = p.suffix.lstrip("."), [p]
    if not files or fmt not in raw.FORMATS:
        raise ContractViolation(str(p), None, f"no events found (looked for {', '.join(raw.FORMATS)} files)")
    frames = []
    for f in files:
        if fmt == "parquet":
            t = pq.read_table(f)
        elif fmt == "csv":
            t = pa_csv.read_csv(f)
        else:
            t = pa_json.read_json(f)
        missing = [c for c in ("user_id", "item_id", "event_type", "ts") if c not in t.column_names]
        if missing:
            raise ContractViolation(str(f), missing[0], f"events table lacks column(s) {missing}")
        cols = ["user_id", "item_id", "event_type", "ts"] + (["value"] if "value" in t.column_names else [])
        frames.append(t.select(cols).to_pandas())
    ev = pd.concat(frames, ignore_index=True)
    weight = ev["event_type"].map(features.event_weights).fillna(0.0)
    if "value" in ev:
        low_rating = (ev["event_type"] == "rating") & (ev["value"].fillna(0.0) < features.min_rating)
        weight = weight.where(~low_rating, 0.0)
    ev = ev[weight > 0]
    return ev.assign(
        user_id=ev["user_id"].astype(str),
        item_id=ev["item_id"].astype(str),
        ts=pd.to_datetime(ev["ts"], utc=True),
    )[["user_id", "item_id", "ts"]]


def run(
    settings: Settings,
    experiment: str,
    events: str,
    exposures: str | None = None,
    horizon_hours: float = 24.0,
) -> AbReportWritten:
    """Read the exposure log and the events, analyse, and write ``<home>/ab/<experiment>/`` (report.html,
    chart.png, report.md)."""
    folder = Path(exposures or settings.serve.exposure_log)
    rows = exposure_log.read(folder)
    if not rows:
        raise ValueError(f"no exposures in {folder} (closed *.jsonl files of the exposure log)")
    shares = None
    if settings.serve.experiments:
        declared = {e.name: e for e in load_experiments(settings.serve.experiments).experiments}
        if experiment in declared:
            variants = declared[experiment].variants
            shares = {v.name: v.weight for v in variants}
    report = analyse(
        experiment,
        pd.DataFrame(rows),
        read_engagements(events, settings.features),
        horizon=timedelta(hours=horizon_hours),
        shares=shares,
    )
    out = Path(settings.home) / "ab" / experiment
    out.mkdir(parents=True, exist_ok=True)
    png = chart_png(report)
    (out / "chart.png").write_bytes(png)
    (out / "report.html").write_text(render_html(report, png))
    text = markdown(report)
    (out / "report.md").write_text(text)
    return AbReportWritten(
        experiment=experiment,
        html=str(out / "report.html"),
        png=str(out / "chart.png"),
        markdown=text,
        srm_p=report.srm_p,
        variants=[
            AbVariant(
                variant=s.variant,
                users=s.users,
                exposures=s.exposures,
                ctr=s.ctr.mean,
                ctr_low=s.ctr.low,
                ctr_high=s.ctr.high,
                ctr_diff=s.ctr_diff.mean if s.ctr_diff else None,
                ctr_diff_low=s.ctr_diff.low if s.ctr_diff else None,
                ctr_diff_high=s.ctr_diff.high if s.ctr_diff else None,
                ndcg=s.ndcg.mean,
            )
            for s in report.variants
        ],
    )
