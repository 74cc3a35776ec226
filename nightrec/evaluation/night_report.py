"""The night report: tonight's lists against the live ones, in one self-contained HTML page.

Charts are matplotlib PNGs embedded as data URIs, so the page opens offline from the object store, a laptop or
an MLflow artifact, with no CDN (as the Data Docs). matplotlib because the output is static and it is already a
dependency (the learning curves); an interactive library would need its JavaScript inlined in every page.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date

import numpy as np
from matplotlib.figure import Figure

from nightrec.evaluation.list_metrics import CHURN_BINS, ListStats, NightLists
from nightrec.evaluation.slices import SliceReport

# Figures of the headline table: key, label, format.
HEADLINE = (
    ("users", "users", "{:,.0f}"),
    ("coverage", "catalog coverage", "{:.1%}"),
    ("gini", "Gini of recommendation counts", "{:.3f}"),
    ("arp", "mean popularity of recommended items (ARP)", "{:.1f}"),
    ("novelty", "novelty (mean self-information, bits)", "{:.2f}"),
    ("personalisation", "personalisation (1 - mean pairwise overlap)", "{:.3f}"),
    ("fallback_share", "users on the cold-start list", "{:.1%}"),
)
CHURN = (
    ("churn_users", "users in both", "{:,.0f}"),
    ("jaccard_mean", "mean Jaccard@K", "{:.3f}"),
    ("jaccard_p10", "Jaccard@K, 10th percentile", "{:.3f}"),
    ("jaccard_p50", "Jaccard@K, median", "{:.3f}"),
    ("jaccard_p90", "Jaccard@K, 90th percentile", "{:.3f}"),
    ("rbo_mean", "mean rank-biased overlap", "{:.3f}"),
    ("replaced_share", "lists replaced almost entirely (Jaccard < 0.1)", "{:.1%}"),
)
HISTORY = ("coverage", "gini", "personalisation", "replaced_share")
POPULARITY_BINS = 20


@dataclass(frozen=True)
class RuleRow:
    """One change rule as judged tonight."""

    name: str
    ok: bool
    action: str
    explain: str


@dataclass
class NightReport:
    ds: date
    policy: str | None
    lists: NightLists
    history: Sequence[
        tuple[str, dict[str, float]]
    ] = ()  # (ds, figures) of past successful nights, newest first
    rules: Sequence[RuleRow] = ()
    notes: Sequence[str] = field(default_factory=tuple)
    slices: SliceReport | None = None  # the live policy's held-out figures by slice (evaluate_and_promote)


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return f'<img alt="chart" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _fmt(fmt: str, value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else fmt.format(value)


def _table(rows: Sequence[tuple[str, str, float | None, float | None]], live: bool = True) -> str:
    body = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{_fmt(fmt, new)}</td>"
        + (f"<td>{_fmt(fmt, old)}</td>" if live else "")
        + "</tr>"
        for label, fmt, new, old in rows
    )
    head = "<tr><th></th><th>tonight</th>" + ("<th>live</th>" if live else "") + "</tr>"
    return f"<table>{head}{body}</table>"


def _verdict(rules: Sequence[RuleRow]) -> str:
    failed = [r.name for r in rules if not r.ok and r.action == "fail"]
    warned = [r.name for r in rules if not r.ok and r.action != "fail"]
    if failed:
        return (
            f'<p class="fail">Stopped by the change rules: {html.escape(", ".join(failed))}. '
            "These lists do not go live; the live ones stay.</p>"
        )
    if warned:
        return f'<p class="warn">Warnings: {html.escape(", ".join(warned))}.</p>'
    return '<p class="ok">Every change rule passed.</p>' if rules else ""


def churn_chart(new: ListStats) -> Figure | None:
    hist = new.churn_histogram()
    if hist is None:
        return None
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    ax.bar(CHURN_BINS[:-1], hist, width=np.diff(CHURN_BINS), align="edge", edgecolor="white")
    ax.set_xlabel("Jaccard@K of a user's new list with their live list (0 = all new, 1 = unchanged)")
    ax.set_ylabel("users")
    ax.set_title("How much each user's list changes tonight")
    fig.tight_layout()
    return fig


def popularity_chart(new: ListStats, live: ListStats | None) -> Figure:
    """Share of recommendations by item-popularity rank (most popular first), new against live."""
    order = np.argsort(-new.items["popularity"].to_numpy(), kind="stable")
    edges = np.linspace(0, len(order), POPULARITY_BINS + 1).astype(int)
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    for stats, label in ((new, "tonight"), (live, "live")):
        if stats is None:
            continue
        counts = stats.counts[order]
        total = max(counts.sum(), 1)
        shares = [counts[a:b].sum() / total for a, b in zip(edges[:-1], edges[1:], strict=True)]
        ax.plot(100 * edges[1:] / max(len(order), 1), shares, marker="o", label=label)
    ax.set_xlabel("items by training popularity, most popular first (percentile)")
    ax.set_ylabel("share of recommendations")
    ax.set_title("Popularity bias")
    ax.legend()
    fig.tight_layout()
    return fig


def category_chart(new: ListStats, live: ListStats | None, top: int = 12) -> Figure:
    mix_new = new.category_mix()
    cats = list(mix_new.index[:top])
    mix_live = live.category_mix() if live is not None else None
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    x = np.arange(len(cats))
    ax.bar(x - 0.2, [mix_new.get(c, 0.0) for c in cats], width=0.4, label="tonight")
    if mix_live is not None:
        ax.bar(x + 0.2, [mix_live.get(c, 0.0) for c in cats], width=0.4, label="live")
    ax.set_xticks(x, [str(c) for c in cats])
    ax.set_xlabel("category (index)")
    ax.set_ylabel("share of recommendations")
    ax.set_title(f"Category mix (top {len(cats)} tonight)")
    ax.legend()
    fig.tight_layout()
    return fig


def history_chart(history: Sequence[tuple[str, dict[str, float]]], ds: date, tonight: dict) -> Figure | None:
    nights = [*reversed(history), (ds.isoformat(), tonight)]
    if len(nights) < 2:
        return None
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    for key in HISTORY:
        ys = [figures.get(key, np.nan) for _, figures in nights]
        if not all(np.isnan(ys)):
            ax.plot(range(len(nights)), ys, marker="o", label=key)
    ax.set_xticks(range(len(nights)), [d[5:] for d, _ in nights], rotation=45)
    ax.set_ylim(0, 1)
    ax.set_title(f"The last {len(nights)} nights (tonight last)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def slice_chart(report: SliceReport) -> Figure:
    """One bar per slice (NDCG@K; Recall@K for the item-popularity cut) with its 95% interval."""
    rows = list(reversed(report.slices))
    values = [s.ndcg if s.ndcg is not None else s.recall for s in rows]
    errors = [(s.ndcg_ci if s.ndcg is not None else s.recall_ci) or 0.0 for s in rows]
    cuts = list(dict.fromkeys(s.cut for s in report.slices))
    colors = [f"C{cuts.index(s.cut)}" for s in rows]
    fig = Figure(figsize=(6, 0.28 * len(rows) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(rows))
    ax.barh(y, np.nan_to_num(values), xerr=errors, color=colors, capsize=3)
    ax.set_yticks(y, [f"{s.cut}: {s.name} (n={s.n})" for s in rows], fontsize="small")
    ax.set_xlabel(f"held-out NDCG@{report.k} (item popularity: Recall@{report.k}), 95% interval")
    ax.set_title(f"Held-out quality by slice ({report.policy})", loc="right")
    fig.tight_layout()
    return fig


def _slice_table(report: SliceReport) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s.cut)}</td><td>{html.escape(s.name)}</td><td>{s.n:,}</td>"
        f"<td>{_ci(s.ndcg, s.ndcg_ci)}</td><td>{_ci(s.recall, s.recall_ci)}</td></tr>"
        for s in report.slices
    )
    gaps = ", ".join(f"{cut} {gap:.3f}" for cut, gap in report.gaps.items()) or "none (too few users)"
    return (
        f"<table><tr><th>cut</th><th>slice</th><th>n</th><th>NDCG@{report.k}</th><th>Recall@{report.k}</th>"
        f"</tr>{rows}</table><p>Best minus worst slice: {gaps}.</p>"
    )


def _ci(value: float | None, ci: float | None) -> str:
    if value is None or np.isnan(value):
        return ""
    return f"{value:.3f}" + (f" ± {ci:.3f}" if ci is not None else "")


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
td:first-child{text-align:left}.fail{color:#b00020;font-weight:bold}.warn{color:#a15c00}.ok{color:#2e7d32}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts img{max-width:490px;border:1px solid #eee}
"""


def render(report: NightReport) -> str:
    """The report as one HTML page."""
    new, live = report.lists.new, report.lists.live
    m_new = new.metrics()
    m_live = live.metrics() if live is not None else {}
    head = _table([(label, fmt, m_new.get(k), m_live.get(k)) for k, label, fmt in HEADLINE])
    churn = (
        _table([(label, fmt, m_new.get(k), None) for k, label, fmt in CHURN], live=False)
        if "churn_users" in m_new
        else "<p>No live lists to compare with (a first night, or the store was unreadable).</p>"
    )
    rules = "".join(
        f'<tr><td>{html.escape(r.name)}</td><td class="{"ok" if r.ok else r.action}">'
        f'{"ok" if r.ok else r.action}</td><td style="text-align:left">{html.escape(r.explain)}</td></tr>'
        for r in report.rules
    )
    charts = [
        churn_chart(new),
        popularity_chart(new, live),
        category_chart(new, live),
        history_chart(report.history, report.ds, m_new),
        slice_chart(report.slices) if report.slices is not None else None,
    ]
    compared = html.escape(report.lists.live_key or "nothing live")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>nightrec night report {report.ds}</title><style>{STYLE}</style></head><body>",
        f"<h1>Night report {report.ds}</h1>",
        f"<p>Lists made by policy <b>{html.escape(str(report.policy))}</b>, compared with "
        f"<code>{compared}</code>.</p>",
        _verdict(report.rules),
        "<h2>Tonight's lists against the live ones</h2>",
        head,
        "<h2>Churn against the live lists</h2>",
        churn,
        "<div class='charts'>",
        *[_png(c) for c in charts if c is not None],
        "</div>",
        "<h2>Held-out quality by slice</h2>",
        _slice_table(report.slices)
        if report.slices is not None
        else "<p>No slices: the night was not evaluated (evaluate_and_promote did not run).</p>",
        "<h2>Change rules</h2>",
        f"<table><tr><th>rule</th><th>verdict</th><th>detail</th></tr>{rules}</table>"
        if rules
        else "<p>No rule judged tonight.</p>",
        *(f"<p>{html.escape(n)}</p>" for n in report.notes),
        "</body></html>",
    ]
    return "\n".join(parts)
