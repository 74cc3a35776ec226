"""The automations' REST client rides out a Prefect server's retryable answers (503 while SQLite is locked)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nightrec.ops.automations import _request


@pytest.fixture
def server():
    """A loopback HTTP server that answers each request with the next (status, body) of its script."""
    script: list[tuple[int, dict]] = []
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self):  # noqa: N802 (http.server's naming)
            seen.append(self.rfile.read(int(self.headers["Content-Length"])).decode())
            status, body = script.pop(0) if script else (200, {})
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/api", script, seen
    httpd.shutdown()


def test_service_unavailable_is_retried_until_the_server_answers(server):
    url, script, seen = server
    unavailable = (503, {"exception_message": "Service Unavailable"})
    script += [unavailable, unavailable, (200, {"id": "a1"})]
    assert _request(url, "PUT", "/automations/a1", {"name": "x"}, backoff_s=0.01) == {"id": "a1"}
    assert seen == ['{"name": "x"}'] * 3  # the same body each time


def test_a_server_that_stays_unavailable_fails_with_the_count_of_attempts(server):
    url, script, _ = server
    script += [(503, {"exception_message": "Service Unavailable"})] * 4
    with pytest.raises(RuntimeError, match=r"HTTP 503 \(after 3 attempts\): .*Service Unavailable"):
        _request(url, "PUT", "/automations/a1", {}, retries=2, backoff_s=0.01)


def test_a_client_error_is_not_retried(server):
    url, script, seen = server
    script += [(422, {"detail": "bad trigger"}), (200, {})]
    with pytest.raises(RuntimeError, match=r"HTTP 422: .*bad trigger"):
        _request(url, "PUT", "/automations/a1", {}, backoff_s=0.01)
    assert len(seen) == 1
