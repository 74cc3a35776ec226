"""Data Docs render styled without network: every script, stylesheet and image a page loads is a local file."""

from __future__ import annotations

import re
from datetime import date
from html.parser import HTMLParser
from pathlib import Path

import great_expectations
import pandas as pd
import pytest

from nightrec.validation import report, runner
from schemas.expectations import to_suite
from schemas.tables import RECS

DS = date(2026, 11, 22)
REMOTE = re.compile(r"^(https?:)?//", re.IGNORECASE)


class _Assets(HTMLParser):
    """The resources a page loads: script src, stylesheet/icon link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.refs.append(("script", a["src"]))
        elif tag == "link" and a.get("href"):
            self.refs.append((f"link rel={a.get('rel')}", a["href"]))
        elif tag == "img" and a.get("src"):
            self.refs.append(("img", a["src"]))


def _assets(page: Path) -> list[tuple[str, str]]:
    parser = _Assets()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.refs


def _recs(source_of_last: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2"],
            "rank": [1, 2, 1],
            "item_id": ["a", "b", "c"],
            "score": [1.0, 0.5, 0.1],
            "source": ["model", "model", source_of_last],
        }
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """One run date's Data Docs site with a passing and a failing validation, built as a gate builds it."""
    root = tmp_path_factory.mktemp("docs")
    docs = str(root / "data_docs" / f"ds={DS.isoformat()}")
    ctx = runner.get_context(str(root / "gx"), docs)
    ok = runner.run_suite(ctx, to_suite(RECS), _recs("model"), engine="pandas", asset="recs")
    bad = runner.run_suite(ctx, to_suite(RECS), _recs("oracle"), engine="pandas", asset="recs_planted")
    assert ok.success and not bad.success
    report.make_report("recommendations", [ok, bad], docs)
    return Path(docs)


def _pages(site: Path) -> dict[str, Path]:
    validations = sorted(site.glob("validations/**/*.html"))
    failed = [p for p in validations if "recs_planted" in p.name]
    assert validations and failed, sorted(site.rglob("*.html"))
    return {"index": site / "index.html", "validation": validations[0], "failed validation": failed[0]}


def test_index_and_validation_pages_load_no_script_or_stylesheet_from_the_network(site):
    for kind, page in _pages(site).items():
        refs = _assets(page)
        assert any(tag == "script" for tag, _ in refs) and any("stylesheet" in tag for tag, _ in refs)
        remote = [(tag, url) for tag, url in refs if REMOTE.match(url)]
        assert not remote, f"{kind} page {page} still loads {remote}"


def test_every_page_of_the_site_references_only_local_assets_that_exist(site):
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 4  # index, suite page, two validations
    for page in pages:
        for tag, url in _assets(page):
            assert not REMOTE.match(url), f"{page}: {tag} {url}"
            assert (page.parent / url.split("?")[0]).resolve().is_file(), f"{page}: {tag} {url} is missing"


def test_vendored_fonts_named_by_the_stylesheets_ship_with_the_site(site):
    vendor = site / "static" / "vendor"
    css = sorted(vendor.rglob("*.css"))
    assert css
    for sheet in css:
        for url in re.findall(r"url\(([^)]+\.woff2)\)", sheet.read_text(encoding="utf-8")):
            assert (sheet.parent / url.strip("'\"")).is_file(), f"{sheet}: {url}"


def test_rewriting_again_changes_nothing(site):
    assert runner.make_site_offline(site) == []


def test_the_root_index_lists_the_run_and_is_styled_offline(site):
    root = site.parent / "index.html"
    html = root.read_text()
    assert f'href="{site.name}/index.html"' in html
    refs = _assets(root)
    assert refs and all(not REMOTE.match(u) and (root.parent / u).is_file() for _, u in refs), refs


def test_every_cdn_asset_of_the_gx_templates_has_a_local_copy():
    """Guards a GX upgrade: a new or changed CDN asset in the templates must be vendored and mapped."""
    templates = Path(great_expectations.__file__).parent / "render" / "view" / "templates"
    tags = re.findall(r"<(?:script|link)\b[^>]*>", "\n".join(p.read_text() for p in templates.glob("*.j2")))
    urls = {m.group(1) for t in tags if (m := re.search(r'(?:src|href)="(https?://[^"]+)"', t))}
    assert urls
    unmapped = sorted(
        u for u in urls if u not in runner._CDN and not runner._VEGA.search(f'<script src="{u}"></script>')
    )
    assert not unmapped, "vendor these into nightrec/validation/static/vendor and map them in runner._CDN"
    for local in runner._CDN.values():
        for path in (local,) if isinstance(local, str) else local:
            assert (runner._VENDOR / path).is_file(), path
