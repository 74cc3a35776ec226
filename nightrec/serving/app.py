"""`nightrec api`: the live lists over HTTP (Starlette on uvicorn).

    GET /v1/recs/{user_id}?k=&segment=   the user's list, the snapshot it came from (also in a header)
    GET /healthz                         the process answers
    GET /readyz                          200 once a snapshot is loaded; 503 with the reason before
    GET /metrics                         Prometheus text format

A user without a list gets the cold-start list of ``segment`` (or the global one), ``source: fallback``:
never a 500. Bad input is a 400 with a JSON body naming the field.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from nightrec.serving.follower import Follower
from nightrec.serving.lists import SOURCES, ServedSnapshot
from nightrec.serving.metrics import ApiMetrics

RECS_PREFIX = "/v1/recs/"
MAX_USER_ID = 256  # characters
SNAPSHOT_HEADER = "x-nightrec-snapshot"
SNAPSHOT_HEADER_BYTES = SNAPSHOT_HEADER.encode()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
JSON = "application/json"


def _json(body: dict, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def _bad(field: str, message: str) -> tuple[int, bytes, None]:
    return 400, orjson.dumps({"error": message, "field": field}), None


def snapshot_tag(served: ServedSnapshot) -> str:
    return served.tag


def create_app(follower: Follower, *, poll: bool = True) -> Api:
    """The API over what ``follower`` serves. ``poll``: run the follower's thread for the app's lifetime."""
    metrics = ApiMetrics()
    previous_hook = follower.on_swap

    def on_swap(new: ServedSnapshot, old: ServedSnapshot | None) -> None:
        metrics.swapped(new, old)
        if previous_hook:
            previous_hook(new, old)

    follower.on_swap = on_swap
    if follower.current is not None:
        metrics.swapped(follower.current, None)

    answered = {status: metrics.requests.labels("recs", str(status)) for status in (200, 400, 503)}
    latency = metrics.latency.labels("recs")
    lists = {source: metrics.lists.labels(source) for source in SOURCES}

    def recs(user_id: str, query: bytes) -> tuple[int, bytes, ServedSnapshot | None]:
        """(status, JSON body, the snapshot that answered) of one list request."""
        served = follower.current  # one read: this request sees one snapshot, whatever swaps meanwhile
        if not user_id:
            return _bad("user_id", "user_id is empty")
        if len(user_id) > MAX_USER_ID:
            return _bad("user_id", f"user_id is longer than {MAX_USER_ID} characters")
        if _CONTROL.search(user_id):
            return _bad("user_id", "user_id contains control characters")
        if served is None:
            return 503, orjson.dumps({"error": "no snapshot loaded yet", "why": _why(follower)}), None
        top_k = max(served.manifest.top_k, 1)
        params = dict(parse_qsl(query.decode("latin-1"))) if query else {}
        raw_k = params.get("k")
        if raw_k is None:
            k = top_k
        elif not raw_k.isdigit() or not 1 <= int(raw_k) <= top_k:
            return _bad("k", f"k must be an integer from 1 to {top_k}, got {raw_k!r}")
        else:
            k = int(raw_k)
        hit = served.lookup(user_id, k)
        if hit is None:
            hit = served.fallback(params.get("segment"), k)
        lists[hit.source].inc()
        body = {
            "user_id": user_id,
            "source": hit.source,
            "items": [
                {"item_id": item, "rank": r, "score": s}
                for r, (item, s) in enumerate(zip(hit.items, hit.scores, strict=True), start=1)
            ],
            "snapshot": served.identity,
            "variant": None,
        }
        return 200, orjson.dumps(body), served

    async def answer(scope, send) -> None:
        t0 = time.perf_counter()
        status, body, served = recs(scope["path"][len(RECS_PREFIX) :], scope["query_string"])
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if served is not None:
            headers.append((SNAPSHOT_HEADER_BYTES, served.tag_bytes))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        answered[status].inc()
        latency.observe(time.perf_counter() - t0)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        served = follower.current
        if served is None:
            return _json({"ready": False, "why": _why(follower)}, 503)
        body = {"ready": True, "snapshot": snapshot_tag(served), "key": served.key, "users": served.users}
        if follower.problem is not None:
            body["problem"] = follower.problem.what  # still serving the last good snapshot
        return _json(body)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if poll:
            follower.start()
        try:
            yield
        finally:
            if poll:
                follower.stop()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", prometheus),
        ],
        lifespan=lifespan,
    )
    return Api(app, answer, follower, metrics)


class Api:
    """The ASGI app: list requests go straight to their handler as plain ASGI (any user id, newlines
    included, reaches the input checks; no route table or request object on the hot path), the rest to
    Starlette's routes and lifespan."""

    def __init__(self, routes: Starlette, answer, follower: Follower, metrics: ApiMetrics):
        self.routes, self.answer, self.follower, self.metrics = routes, answer, follower, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(RECS_PREFIX):
            await self.answer(scope, send)
        else:
            await self.routes(scope, receive, send)


def _why(follower: Follower) -> str:
    return follower.problem.what if follower.problem else "the first snapshot is loading"


def from_settings() -> Api:
    """The app of ``Settings()`` (the environment): what ``nightrec api`` gives uvicorn, once per worker."""
    from nightrec.io.store import open_store
    from nightrec.settings import Settings

    settings = Settings()
    return create_app(Follower(open_store(settings.store), poll_s=settings.serve.poll_s))
