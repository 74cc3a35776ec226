"""`nightrec api`: the live lists over HTTP (Starlette on uvicorn).

    GET /v1/recs/{user_id}?k=&segment=   the user's list, the snapshot it came from (also in a header) and
                                         the A/B variant that chose it
    GET /healthz                         the process answers
    GET /readyz                          200 once the default channel's snapshot is loaded; 503 with why
    GET /metrics                         Prometheus text format

A user without a list gets the cold-start list of ``segment`` (or the global one), ``source: fallback``:
never a 500. Bad input is a 400 with a JSON body naming the field. A user inside an active experiment is
served their variant's channel, and the exposure is logged; while that channel has nothing loaded, the user
gets the default channel's list, as no variant (and no exposure is logged, so the experiment stays clean).
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

from nightrec.publish.channels import DEFAULT_CHANNEL
from nightrec.serving.experiments import ExperimentFile, assign
from nightrec.serving.exposures import ExposureLog
from nightrec.serving.follower import Follower
from nightrec.serving.lists import SOURCES, ServedSnapshot
from nightrec.serving.metrics import ApiMetrics

RECS_PREFIX = "/v1/recs/"
MAX_USER_ID = 256  # characters
SNAPSHOT_HEADER = "x-nightrec-snapshot"
VARIANT_HEADER = "x-nightrec-variant"
_SNAPSHOT_HEADER = SNAPSHOT_HEADER.encode()
_VARIANT_HEADER = VARIANT_HEADER.encode()
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
JSON = "application/json"


def _json(body: dict, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def _bad(field: str, message: str) -> tuple[int, bytes, None, None]:
    return 400, orjson.dumps({"error": message, "field": field}), None, None


def create_app(
    followers: Follower | dict[str, Follower],
    *,
    experiments: ExperimentFile | None = None,
    exposures: ExposureLog | None = None,
    poll: bool = True,
) -> Api:
    """The API over what the followers serve (one per channel; a single follower is the default channel).

    Args:
        followers: channel -> the follower of its live pointer; must hold ``default``.
        experiments: The A/B experiments; every channel a variant names needs a follower.
        exposures: Where exposures are logged (None: not logged).
        poll: Run the followers' threads (and close the exposure log) for the app's lifetime.
    """
    if isinstance(followers, Follower):
        followers = {DEFAULT_CHANNEL: followers}
    experiments = experiments or ExperimentFile()
    missing = experiments.channels - set(followers)
    if DEFAULT_CHANNEL not in followers or missing:
        raise ValueError(
            f"no follower for channel(s) {sorted(missing | ({DEFAULT_CHANNEL} - set(followers)))}"
        )
    default = followers[DEFAULT_CHANNEL]
    metrics = ApiMetrics()
    for channel, follower in followers.items():
        _hook(follower, channel, metrics)
    answered = {status: metrics.requests.labels("recs", str(status)) for status in (200, 400, 503)}
    latency = metrics.latency.labels("recs")
    lists = {source: metrics.lists.labels(source) for source in SOURCES}
    has_experiments = bool(experiments.experiments)

    def recs(user_id: str, query: bytes) -> tuple[int, bytes, ServedSnapshot | None, bytes | None]:
        """(status, JSON body, the snapshot that answered, the variant header) of one list request."""
        if not user_id:
            return _bad("user_id", "user_id is empty")
        if len(user_id) > MAX_USER_ID:
            return _bad("user_id", f"user_id is longer than {MAX_USER_ID} characters")
        if _CONTROL.search(user_id):
            return _bad("user_id", "user_id contains control characters")
        assigned = assign(experiments, user_id) if has_experiments else None
        served, variant = default.current, None  # one read each: a request sees one snapshot
        if assigned is not None:
            in_variant = followers[assigned[1].channel].current
            if in_variant is not None:
                served, variant = in_variant, assigned
        if served is None:
            return 503, orjson.dumps({"error": "no snapshot loaded yet", "why": _why(default)}), None, None
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
        header = None
        if variant is not None:
            name, v = variant
            body["variant"] = {"experiment": name, "variant": v.name, "channel": v.channel}
            header = f"{name}={v.name}".encode("latin-1", "replace")
            if exposures is not None:
                exposures.record(user_id, name, v.name, v.channel, served.tag, hit.items)
        return 200, orjson.dumps(body), served, header

    async def answer(scope, send) -> None:
        t0 = time.perf_counter()
        status, body, served, variant = recs(scope["path"][len(RECS_PREFIX) :], scope["query_string"])
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if served is not None:
            headers.append((_SNAPSHOT_HEADER, served.tag_bytes))
        if variant is not None:
            headers.append((_VARIANT_HEADER, variant))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        answered[status].inc()
        latency.observe(time.perf_counter() - t0)

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(request: Request) -> Response:
        served = default.current
        if served is None:
            return _json({"ready": False, "why": _why(default)}, 503)
        body = {"ready": True, "snapshot": served.tag, "key": served.key, "users": served.users}
        if default.problem is not None:
            body["problem"] = default.problem.what  # still serving the last good snapshot
        others = {c: f for c, f in followers.items() if c != DEFAULT_CHANNEL}
        if others:
            body["channels"] = {
                c: ({"snapshot": f.current.tag} if f.current else {"why": _why(f)})
                | ({"problem": f.problem.what} if f.current and f.problem else {})
                for c, f in others.items()
            }
        return _json(body)

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if poll:
            for f in followers.values():
                f.start()
        try:
            yield
        finally:
            if poll:
                for f in followers.values():
                    f.stop()
                if exposures is not None:
                    exposures.close()  # a clean shutdown writes every queued exposure

    app = Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", prometheus)],
        lifespan=lifespan,
    )
    return Api(app, answer, followers, metrics)


def _hook(follower: Follower, channel: str, metrics: ApiMetrics) -> None:
    previous_hook = follower.on_swap

    def on_swap(new: ServedSnapshot, old: ServedSnapshot | None) -> None:
        metrics.swapped(channel, new, old)
        if previous_hook:
            previous_hook(new, old)

    follower.on_swap = on_swap
    if follower.current is not None:
        metrics.swapped(channel, follower.current, None)


class Api:
    """The ASGI app: list requests go straight to their handler as plain ASGI (any user id, newlines
    included, reaches the input checks; no route table or request object on the hot path), the rest to
    Starlette's routes and lifespan."""

    def __init__(self, routes: Starlette, answer, followers: dict[str, Follower], metrics: ApiMetrics):
        self.routes, self.answer, self.followers, self.metrics = routes, answer, followers, metrics

    @property
    def follower(self) -> Follower:
        return self.followers[DEFAULT_CHANNEL]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(RECS_PREFIX):
            await self.answer(scope, send)
        else:
            await self.routes(scope, receive, send)


def _why(follower: Follower) -> str:
    return follower.problem.what if follower.problem else "the first snapshot is loading"


def from_settings() -> Api:
    """The app of ``Settings()`` (the environment): what ``nightrec api`` gives uvicorn, once per worker."""
    from nightrec.publish.channels import open_channel
    from nightrec.serving.experiments import load_experiments
    from nightrec.settings import Settings

    settings = Settings()
    serve = settings.serve
    experiments = load_experiments(serve.experiments)
    channels = {DEFAULT_CHANNEL} | experiments.channels
    followers = {c: Follower(open_channel(settings.store, c), poll_s=serve.poll_s) for c in sorted(channels)}
    exposures = ExposureLog(serve.exposure_log) if experiments.experiments else None
    return create_app(followers, experiments=experiments, exposures=exposures)
