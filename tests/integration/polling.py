"""Polling a live Prefect stack from a test, through a server that may answer errors while it is busy."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import httpx
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings

from nightrec.ops.local_stack import LocalStack

T = TypeVar("T")


@contextmanager
def client_of(stack: LocalStack) -> Iterator:
    with temporary_settings({PREFECT_API_URL: stack.api_url}), get_client(sync_client=True) as client:
        yield client


def wait_for(
    stack: LocalStack, predicate: Callable[..., T], timeout_s: float, what: str, every_s: float = 3
) -> T:
    """Call ``predicate(client)`` until it returns something truthy; fail after ``timeout_s`` with the logs.

    A server error (5xx) or a dropped connection is a busy server, not an answer: on SQLite, the workers' polls
    and the event triggers contend for the write lock (a PrefectHTTPStatusError ended one run of the modular
    chain test). It is asked again, and the last such error is in the failure message if the wait runs out.
    """
    deadline = time.monotonic() + timeout_s
    last_error = None
    with client_of(stack) as client:
        while time.monotonic() < deadline:
            try:
                if found := predicate(client):
                    return found
            except PrefectHTTPStatusError as e:
                if e.response.status_code < 500:
                    raise
                last_error = e
            except httpx.TransportError as e:
                last_error = e
            time.sleep(every_s)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(stack.logs.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what} (last server error: {last_error!r})\n{logs}")
