"""What the API exports to Prometheus: requests, latency, the snapshot in use, its load time, fallback share.

One registry per app (not the process-global one), so two apps in one process (tests) do not collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from nightrec.serving.lists import ServedSnapshot

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "nightrec_api_requests", "HTTP requests answered.", ["route", "status"], registry=r
        )
        self.latency = Histogram(
            "nightrec_api_request_seconds",
            "Time to answer, inside the app.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lists = Counter("nightrec_api_lists", "Lists served, by source.", ["source"], registry=r)
        self.snapshot = Gauge(
            "nightrec_api_snapshot_info",
            "The snapshot being served per channel (value 1; its identity in the labels).",
            ["channel", "ds", "generation", "run_id"],
            registry=r,
        )
        self.load_seconds = Gauge(
            "nightrec_api_snapshot_load_seconds",
            "Seconds to fetch, verify and index it.",
            ["channel"],
            registry=r,
        )
        self.snapshot_users = Gauge(
            "nightrec_api_snapshot_users", "Users with a list in it.", ["channel"], registry=r
        )
        self.snapshot_bytes = Gauge(
            "nightrec_api_snapshot_bytes", "Bytes of its in-memory arrays.", ["channel"], registry=r
        )
        self.swaps = Counter("nightrec_api_snapshot_swaps", "Snapshots swapped in.", ["channel"], registry=r)

    def swapped(self, channel: str, new: ServedSnapshot, old: ServedSnapshot | None) -> None:
        if old is not None:
            m = old.manifest
            self.snapshot.remove(channel, m.ds.isoformat(), str(m.generation), m.run_id)
        m = new.manifest
        self.snapshot.labels(channel, m.ds.isoformat(), str(m.generation), m.run_id).set(1)
        self.load_seconds.labels(channel).set(new.load_seconds)
        self.snapshot_users.labels(channel).set(new.users)
        self.snapshot_bytes.labels(channel).set(new.nbytes)
        self.swaps.labels(channel).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
