"""`nightrec pages`: the Data Docs and the night reports over HTTP, so every link a night leaves opens.

A browser will not follow a ``file://`` link out of the Prefect or MLflow UI, and the Data Docs' own pages need a
web origin for their stylesheets. Read-only and bound to loopback by default; it serves two folders and
nothing else of the home.
"""

from __future__ import annotations

import html
import re
from datetime import date
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nightrec.io import lake
from nightrec.ops import links
from nightrec.settings import Settings, for_channel
from schemas.manifest import CHANNEL_NAME, DEFAULT_CHANNEL


def create_pages(settings: Settings) -> Starlette:
    docs = Path(settings.data_docs)
    docs.mkdir(parents=True, exist_ok=True)

    async def index(request: Request) -> HTMLResponse:
        nights = sorted(
            (
                p.name[3:]
                for p in (Path(settings.lake) / "recs").glob("ds=*")
                if (p / lake.NIGHT_REPORT).exists()
            ),
            reverse=True,
        )
        rows = "".join(
            f'<li><a href="{links.REPORTS}/{html.escape(ds)}">{html.escape(ds)}</a></li>' for ds in nights
        )
        return HTMLResponse(
            "<!doctype html><meta charset='utf-8'><title>nightrec pages</title>"
            f"<h1>nightrec</h1><p><a href='{links.DATA_DOCS}/index.html'>Data Docs</a> (every gate, per night)</p>"
            f"<h2>Night reports</h2><ul>{rows or '<li>none yet</li>'}</ul>"
        )

    async def report(request: Request) -> FileResponse:
        try:
            ds = date.fromisoformat(request.path_params["ds"])
        except ValueError:
            raise HTTPException(400, "the run date must be YYYY-MM-DD") from None
        channel = request.query_params.get("channel", DEFAULT_CHANNEL)
        if not re.match(CHANNEL_NAME, channel):
            raise HTTPException(400, "invalid channel name")
        path = (
            lake.partition_path(settings.lake, for_channel(settings, channel).recs_table, ds)
            / lake.NIGHT_REPORT
        )
        if not path.is_file():
            raise HTTPException(404, f"no night report for {ds} (channel {channel})")
        return FileResponse(path, media_type="text/html")

    async def root_docs(request: Request) -> RedirectResponse:
        return RedirectResponse(f"/{links.DATA_DOCS}/index.html")

    return Starlette(
        routes=[
            Route("/", index),
            Route(f"/{links.REPORTS}/{{ds}}", report),
            Route(f"/{links.DATA_DOCS}", root_docs),
            Mount(f"/{links.DATA_DOCS}", app=StaticFiles(directory=docs, html=True), name="docs"),
        ]
    )


def from_settings() -> Starlette:
    """The app of ``Settings()`` (the environment), for uvicorn's factory mode."""
    return create_pages(Settings())
