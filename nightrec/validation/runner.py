"""Run one Great Expectations suite on a Spark or pandas frame, with Data Docs, and report failures plainly."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
import shutil
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier  # noqa: E402

from schemas.results import RuleFailure  # noqa: E402

_SITE = "nightrec_docs"


@dataclass
class SuiteResult:
    suite: str
    success: bool
    failures: list[RuleFailure] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    data_docs: str | None = None
    warnings: list[RuleFailure] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


_RUN_NAME: ContextVar[str | None] = ContextVar("nightrec_gx_run_name", default=None)


def name_runs(name: str) -> None:
    """Name the validation runs that follow in this context (the Data Docs' "Run Name"): each gate calls it
    as it starts, with its run date and gate, so every page says which night and gate it belongs to."""
    _RUN_NAME.set(name)


def get_context(gx_root: str, docs_dir: str):
    """A file-backed GX context (validation history kept between nights) whose Data Docs go to ``docs_dir``.

    Each run date gets its own static site: the site's folder is switched to ``docs_dir`` when it differs.
    """
    Path(gx_root).mkdir(parents=True, exist_ok=True)
    ctx = gx.get_context(mode="file", project_root_dir=gx_root)
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    site = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    sites = ctx.variables.data_docs_sites or {}
    if _SITE not in sites:
        ctx.add_data_docs_site(site_name=_SITE, site_config=site)
    elif sites[_SITE].get("store_backend", {}).get("base_directory") != str(docs_dir):
        ctx.update_data_docs_site(site_name=_SITE, site_config=site)
    return ctx


def _plain(row):
    """numpy scalars -> Python ones, so messages read ``{'n_short': 1}`` rather than ``np.int64(1)``."""
    if isinstance(row, dict):
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
    return row.item() if hasattr(row, "item") else row


def _failure(r) -> RuleFailure:
    cfg = r.expectation_config
    kwargs = dict(cfg.kwargs)
    res = r.result or {}
    rows = res.get("unexpected_index_list") or res.get("partial_unexpected_list") or []
    column = kwargs.pop("column", None) or kwargs.get("column_list") or kwargs.get("column_set")
    detail = {k: v for k, v in kwargs.items() if k not in ("batch_id", "column_list", "column_set")}
    if "observed_value" in res:
        detail["observed"] = res["observed_value"]
    if r.exception_info and r.exception_info.get("raised_exception"):
        detail["error"] = str(r.exception_info.get("exception_message"))[:300]
    return RuleFailure(
        rule=cfg.type,
        column=column if isinstance(column, str) else (list(column) if column else None),
        count=res.get("unexpected_count"),
        rows=[_plain(r) for r in rows[:5]],
        detail=detail or None,
    )


def _checkpoint(name: str, vd, result_format: str, index_columns: list[str] | None) -> gx.Checkpoint:
    return gx.Checkpoint(
        name=name,
        validation_definitions=[vd],
        actions=[],  # docs built by run_suite once the result is completed
        result_format={
            "result_format": result_format,
            "partial_unexpected_count": 5,
            **({"unexpected_index_column_names": index_columns} if index_columns else {}),
        },
    )


def _ensure_checkpoint(ctx, cp: gx.Checkpoint) -> gx.Checkpoint:
    """The stored checkpoint when it already is ``cp``, else ``cp`` stored.

    ``checkpoints.add_or_update`` stores the suite once more, and GX matches every expectation of the new suite
    against every one of the old (quadratic: ~0.4 s for a suite of 80 metrics); the validation definition
    has just stored it, and the stored checkpoint reads it from there.
    """
    try:
        stored = ctx.checkpoints.get(cp.name)
    except Exception:  # noqa: BLE001 - absent, or unreadable after a GX upgrade: write it anew
        return ctx.checkpoints.add_or_update(cp)
    same = (
        stored.result_format == cp.result_format
        and [v.name for v in stored.validation_definitions] == [v.name for v in cp.validation_definitions]
        and [a.name for a in stored.actions] == [a.name for a in cp.actions]
    )
    return stored if same else ctx.checkpoints.add_or_update(cp)


def run_suite(
    ctx,
    suite: gx.ExpectationSuite,
    frame,
    *,
    engine: str,
    asset: str,
    result_format: str = "SUMMARY",
    index_columns: list[str] | None = None,
    observed: dict[str, str] | None = None,
):
    """Validate ``frame`` (Spark or pandas DataFrame) against ``suite`` and update the Data Docs.

    The result is stored, then the Data Docs are built from it (not by a checkpoint action, which renders
    before it could be completed): the page names the data asset, the run (:func:`name_runs`), and, for a
    column in ``observed``, that text as its observed value (an aggregate rule's figure against its bound).

    Returns:
        SuiteResult with one failure dict per broken expectation (rule, column, count, up to 5 values).
    """
    source_name = f"nightrec_{engine}"
    source = (
        # GX persists every Spark batch by default and never unpersists it: building that cache cost more
        # than the few scans of the suite it serves (10M events: ~4 s of ~5 s), and it pinned every
        # validated table in memory for the rest of the session.
        ctx.data_sources.add_or_update_spark(source_name, persist=False)
        if engine == "spark"
        else ctx.data_sources.add_or_update_pandas(source_name)
    )
    try:
        data_asset = source.get_asset(asset)
    except LookupError:
        data_asset = source.add_dataframe_asset(asset)
    try:
        batch_def = data_asset.get_batch_definition("whole")
    except (KeyError, LookupError):
        batch_def = data_asset.add_batch_definition_whole_dataframe("whole")
    name = f"{asset}__{suite.name}"
    # Stores the suite as well (GX updates a validation definition's suite with it).
    vd = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch_def, suite=suite)
    )
    suite = vd.suite
    cp = _ensure_checkpoint(ctx, _checkpoint(name, vd, result_format, index_columns))
    # run_time given: without it GX would read a date-like run name as the run's time.
    run_id = RunIdentifier(run_name=_RUN_NAME.get(), run_time=dt.datetime.now(dt.UTC))
    cr = cp.run(batch_parameters={"dataframe": frame}, run_id=run_id)
    key, vr = next(iter(cr.run_results.items()))
    vr.meta["batch_spec"]["data_asset_name"] = vr.asset_name or asset
    for r in vr.results:
        text = (observed or {}).get(r.expectation_config.kwargs.get("column"))
        if text is not None:
            r.result["observed_value"] = text
    ctx.validation_results_store.set(key, vr)
    ctx.build_data_docs(
        site_names=[_SITE], resource_identifiers=[key, ExpectationSuiteIdentifier(name=suite.name)]
    )
    failures = [_failure(r) for r in vr.results if not r.success]
    docs = None
    urls = ctx.get_docs_sites_urls(site_names=[_SITE])
    if urls:
        docs = urls[0].get("site_url")
    return SuiteResult(suite.name, bool(cr.success), failures, dict(vr.statistics), docs)


# Data Docs offline: GX's page templates (great_expectations/render/view/templates) load their CSS and JS from
# CDNs, so without network the pages render unstyled. Each site gets the vendored copies (static/vendor/, see
# its README) and every page's CDN references are rewritten to them.
_VENDOR = Path(__file__).parent / "static" / "vendor"
_SITE_VENDOR = ("static", "vendor")
_BOOTSTRAP_CSS = "bootstrap-4.3.1/bootstrap.min.css"
_CDN = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": _BOOTSTRAP_CSS,
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap-4.3.1/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery-3.7.1/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper.js-1.12.9/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table-1.19.1/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table-1.19.1/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js": (
        "bootstrap-table-1.19.1/bootstrap-table-filter-control.min.js"
    ),
    # The index page asks for the minified file and the other pages for the plain one: same rules.
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css": (
        "bootstrap-table-1.19.0/bootstrap-table-filter-control.min.css"
    ),
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css": (
        "bootstrap-table-1.19.0/bootstrap-table-filter-control.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css": (
        "bootstrap-datepicker-1.9.0/bootstrap-datepicker.min.css"
    ),
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js": (
        "bootstrap-datepicker-1.9.0/bootstrap-datepicker.min.js"
    ),
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": (
        "bootstrap-dark-1.1.0/bootstrap-prefers-dark.min.css"
    ),
    # Only solid icons are used (fa-check-circle, fa-times, ...): core + solid instead of all.min.css.
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": (
        "fontawesome-free-6.6.0/css/fontawesome.min.css",
        "fontawesome-free-6.6.0/css/solid.min.css",
    ),
}
_TAG = re.compile(r"<(script|link)\b[^>]*>", re.IGNORECASE)
_URL = re.compile(r'\b(src|href)="(https?://[^"]+)"')
# Subresource integrity needs CORS, which file:// pages cannot do: the local copies load without it.
_SRI = re.compile(r'\s+(integrity|crossorigin)="[^"]*"')
# Vega draws only the charts of distribution/profiling expectations (graph.j2); no nightrec suite renders one,
# so pages without a chart drop the ~0.8 MB of scripts rather than vendoring them.
_VEGA = re.compile(r'<script src="https://cdn\.jsdelivr\.net/npm/vega(?:-lite|-embed)?@\d+"></script>\s*')
# The navbar logo is fetched from GX's bucket with the context id in the query; the site ships the same image.
_GX_LOGO = re.compile(r'src="https://great-expectations-web-assets\.[^"/]+/logo-long\.png[^"]*"')
# GX counts one folder too few above validation pages for their favicon; anchor site images at the site root.
_SITE_IMAGE = re.compile(r'\b(src|href)="(?:\./|(?:\.\./)*)static/images/([^"]+)"')


def _copy_vendor(dest: Path, only: str | None = None) -> Path:
    """Copy the vendored assets (or only the ``only`` library folder) to ``dest/static/vendor`` (idempotent)."""
    out = dest.joinpath(*_SITE_VENDOR)
    src, to = (_VENDOR / only, out / only) if only else (_VENDOR, out)
    shutil.copytree(src, to, dirs_exist_ok=True, ignore=shutil.ignore_patterns("README.md"))
    return out


def _offline_html(html: str, page: Path, site: Path) -> str:
    rel = Path(os.path.relpath(site, page.parent)).as_posix()
    vendor = f"{rel}/{'/'.join(_SITE_VENDOR)}"

    def tag(m: re.Match) -> str:
        text = m.group(0)
        url = _URL.search(text)
        local = _CDN.get(url.group(2)) if url else None
        if local is None:
            return text
        text = _SRI.sub("", text)
        paths = (local,) if isinstance(local, str) else local
        return "\n    ".join(text.replace(url.group(2), f"{vendor}/{p}") for p in paths)

    if "vegaEmbed(" not in html:
        html = _VEGA.sub("", html)
    html = _GX_LOGO.sub('src="static/images/logo-long.png"', html)
    html = _SITE_IMAGE.sub(lambda m: f'{m.group(1)}="{rel}/static/images/{m.group(2)}"', html)
    return _TAG.sub(tag, html)


def make_site_offline(site_dir: str | Path) -> list[Path]:
    """Make one Data Docs site render styled without network (idempotent; run after every docs build).

    Copies the vendored Bootstrap, jQuery, bootstrap-table, datepicker and Font Awesome files into
    ``site_dir/static/vendor/`` and points every page's CDN ``<script>``/``<link>`` at them.

    Returns:
        The pages that were rewritten.
    """
    site = Path(site_dir)
    if not (site / "index.html").exists():
        return []
    _copy_vendor(site)
    changed = []
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        offline = _offline_html(html, page, site)
        if offline != html:
            page.write_text(offline, encoding="utf-8")
            changed.append(page)
    return changed


def record_verdict(docs: str | Path, gate: str, success: bool) -> None:
    """``docs/gates.json``: each gate's verdict for this run date (a rerun overwrites its gate's)."""
    f = Path(docs) / "gates.json"
    verdicts = json.loads(f.read_text()) if f.exists() else {}
    verdicts[gate] = bool(success)
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps(verdicts, sort_keys=True))


def _night_row(p: Path) -> str:
    """One night of the root index: its date, its overall verdict, and each gate's."""
    f = p / "gates.json"
    verdicts: dict[str, bool] = json.loads(f.read_text()) if f.exists() else {}
    if not verdicts:
        colour, word = "secondary", "unknown"  # a night from before verdicts were recorded
    elif all(verdicts.values()):
        colour, word = "success", "passed"
    else:
        colour, word = "danger", "failed"
    gates = " ".join(
        f'<span class="badge badge-{"success" if ok else "danger"}">{html.escape(g)}</span>'
        for g, ok in verdicts.items()
    )
    return (
        f'<a class="list-group-item list-group-item-action d-flex justify-content-between" '
        f'href="{p.name}/index.html"><span>{p.name[3:]} <span class="badge badge-{colour}">{word}</span>'
        f"</span><span>{gates}</span></a>"
    )


def write_root_index(docs_root: str | Path) -> Path:
    """``docs_root/index.html``: links to every run date's own Data Docs site, newest first."""
    root = Path(docs_root)
    runs = sorted((p for p in root.glob("ds=*") if (p / "index.html").exists()), reverse=True)
    items = "\n".join(_night_row(p) for p in runs)
    css = "/".join((*_SITE_VENDOR, _BOOTSTRAP_CSS))
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>nightrec Data Docs</title>"
        f'<link rel="stylesheet" href="{css}"></head>'
        '<body><div class="container py-4"><h1 class="h3">nightrec data gates</h1>'
        '<p class="text-muted">One Data Docs site per run date, newest first.</p>'
        f'<div class="list-group">\n{items}\n</div></div></body></html>\n'
    )
    out = root / "index.html"
    root.mkdir(parents=True, exist_ok=True)
    _copy_vendor(root, only=_BOOTSTRAP_CSS.split("/")[0])
    out.write_text(html)
    return out
