"""Run one Great Expectations suite on a Spark or pandas frame, with Data Docs, and report failures plainly."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

_SITE = "nightrec_docs"


@dataclass
class SuiteResult:
    suite: str
    success: bool
    failures: list[dict] = field(default_factory=list)
    statistics: dict[str, Any] = field(default_factory=dict)
    data_docs: str | None = None
    warnings: list[dict] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


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


def _failure(r) -> dict:
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
    return {
        "rule": cfg.type,
        "column": column if isinstance(column, str) else (list(column) if column else None),
        "count": res.get("unexpected_count"),
        "rows": [_plain(r) for r in rows[:5]],
        "detail": detail or None,
    }


def _checkpoint(name: str, vd, result_format: str, index_columns: list[str] | None) -> gx.Checkpoint:
    return gx.Checkpoint(
        name=name,
        validation_definitions=[vd],
        actions=[gx.checkpoint.UpdateDataDocsAction(name="docs", site_names=[_SITE])],
        result_format={
            "result_format": result_format,
            "partial_unexpected_count": 5,
            **({"unexpected_index_column_names": index_columns} if index_columns else {}),
        },
    )


def run_suite(
    ctx,
    suite: gx.ExpectationSuite,
    frame,
    *,
    engine: str,
    asset: str,
    result_format: str = "SUMMARY",
    index_columns: list[str] | None = None,
    detail_on_failure_only: bool = False,
):
    """Validate ``frame`` (Spark or pandas DataFrame) against ``suite`` and update the Data Docs.

    Returns:
        SuiteResult with one failure dict per broken expectation (rule, column, count, up to 5 values).
    """
    suite = ctx.suites.add_or_update(suite)
    source_name = f"nightrec_{engine}"
    source = (
        ctx.data_sources.add_or_update_spark(source_name)
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
    vd = ctx.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=f"{asset}__{suite.name}", data=batch_def, suite=suite)
    )
    name = f"{asset}__{suite.name}"
    # On big frames the first pass only answers pass/fail; the row-level detail is paid for on failure.
    first = "BOOLEAN_ONLY" if detail_on_failure_only else result_format
    cp = ctx.checkpoints.add_or_update(_checkpoint(name, vd, first, index_columns))
    cr = cp.run(batch_parameters={"dataframe": frame})
    if detail_on_failure_only and not cr.success:
        cp = ctx.checkpoints.add_or_update(_checkpoint(name, vd, result_format, index_columns))
        cr = cp.run(batch_parameters={"dataframe": frame})
    vr = next(iter(cr.run_results.values()))
    failures = [_failure(r) for r in vr.results if not r.success]
    docs = None
    urls = ctx.get_docs_sites_urls(site_names=[_SITE])
    if urls:
        docs = urls[0].get("site_url")
    return SuiteResult(suite.name, bool(cr.success), failures, dict(vr.statistics), docs)


def write_root_index(docs_root: str | Path) -> Path:
    """``docs_root/index.html``: links to every run date's own Data Docs site, newest first."""
    root = Path(docs_root)
    runs = sorted((p for p in root.glob("ds=*") if (p / "index.html").exists()), reverse=True)
    items = "\n".join(f'<li><a href="{p.name}/index.html">{p.name[3:]}</a></li>' for p in runs)
    html = (
        "<!doctype html><html><head><meta charset='utf-8'><title>nightrec Data Docs</title></head>"
        f"<body><h1>nightrec data gates</h1><p>One Data Docs site per run date.</p><ul>\n{items}\n</ul>"
        "</body></html>\n"
    )
    out = root / "index.html"
    root.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    return out
