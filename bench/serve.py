"""`nightrec api` under load: 1M users x K=20 from a published snapshot, real HTTP load generators on loopback.

Usage: .venv/bin/python bench/serve.py [--users 1000000] [--items 100000] [--top-k 20] [--parts 16]
       [--workers 2] [--rate 5000] [--seconds 20] [--work /tmp/nightrec-bench-serve] [--reuse]
       [--out bench/results/serve.md]

Needs `wrk` and `redis-server` (Debian: apt-get install wrk redis-server) and Node (autocannon is installed
into bench/.node on first use). Steps, all against the same machine's 2 cores, load generator included:
1. lists generated (Zipf(0.8) items), published with the publish stage's own writer, made live;
2. `nightrec api --workers N` started as users start it; load time and resident memory of its process tree;
3. the most requests/s wrk gets (random known users, 64 connections);
4. latency at a fixed offered rate (autocannon, 16 connections);
5. the same fixed rate while the live pointer flips three times and rolls back once: non-2xx count and the
   snapshots the answers named;
6. the anchor: redis-benchmark GET of a value the size of one answer, on a redis-server started here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from nightrec.io import lake
from nightrec.io.store import open_store
from nightrec.publish import pointer, snapshot
from schemas.manifest import Manifest

HERE = Path(__file__).parent
ROOT = HERE.parent
NODE = HERE / ".node"
DS = date(2026, 11, 22)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lists(path: Path, n_users: int, n_items: int, k: int, seed: int = 0) -> None:
    """Every user K distinct items drawn by popularity (Zipf 0.8), as precompute leaves them in the lake."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    draws = rng.choice(n_items, size=(n_users, 2 * k), p=weights / weights.sum())
    draws.sort(axis=1)
    fresh = np.ones_like(draws, dtype=bool)
    fresh[:, 1:] = draws[:, 1:] != draws[:, :-1]
    # The first K distinct items of each row (a row with fewer keeps what it has: rare at 2K draws).
    order = np.argsort(~fresh, axis=1, kind="stable")[:, :k]
    items = np.take_along_axis(draws, order, axis=1)
    keep = np.take_along_axis(fresh, order, axis=1)
    rng.permuted(items, axis=1, out=items)  # rank order unrelated to the id order
    user = np.repeat(np.arange(n_users), k)[keep.ravel()]
    rank = np.tile(np.arange(1, k + 1, dtype=np.int32), n_users)[keep.ravel()]
    users = pa.array([f"u{u:07d}" for u in range(n_users)], pa.string())
    catalog = pa.array([f"i{i:06d}" for i in range(n_items)], pa.string())
    table = pa.table(
        {
            "user_id": pa.DictionaryArray.from_arrays(pa.array(user, pa.int32()), users).cast(pa.string()),
            "rank": rank,
            "item_id": pa.DictionaryArray.from_arrays(
                pa.array(items.ravel()[keep.ravel()], pa.int32()), catalog
            ).cast(pa.string()),
            "score": np.round(rng.random(len(user)), 4),
            "source": pa.array(["model"] * len(user), pa.string()),
        }
    )
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-0.parquet")
    cold = pa.table(
        {
            "segment": [""] * k,
            "rank": np.arange(1, k + 1, dtype=np.int32),
            "item_id": catalog.slice(0, k),
            "score": np.arange(k, 0, -1).astype(np.float64),
        }
    )
    pq.write_table(cold, path / lake.COLDSTART)


def _copy(store, manifest: Manifest, ds: date, run_id: str) -> str:
    """The same lists published again as another snapshot (other date and run): what a flip swaps in."""
    parts = []
    for i, part in enumerate(manifest.parts):
        key = snapshot.part_key(ds, run_id, i)
        store.put_bytes(key, store.get_bytes(part.key))
        parts.append(part.model_copy(update={"key": key}))
    cold = manifest.coldstart
    if cold is not None:
        store.put_bytes(snapshot.coldstart_key(ds, run_id), store.get_bytes(cold.key))
        cold = cold.model_copy(update={"key": snapshot.coldstart_key(ds, run_id)})
    copy = manifest.model_copy(update={"ds": ds, "run_id": run_id, "parts": parts, "coldstart": cold})
    key = snapshot.manifest_key(ds, run_id)
    store.put_if(key, copy.to_json(), if_none_match=True)
    return key


def _setup(args, store) -> list[str]:
    recs = args.work / "lake-recs"
    _lists(recs, args.users, args.items, args.top_k)
    manifest = snapshot.write_snapshot(
        recs, store, ds=DS, run_id="night-0", shard_count=args.parts, meta={"top_k": args.top_k}
    )
    keys = [snapshot.manifest_key(DS, "night-0")]
    keys += [_copy(store, manifest, DS + timedelta(days=n), f"night-{n}") for n in (1, 2, 3)]
    return keys


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback)
        return r.read()


def _rss_mib(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def _gauge(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


def _start_api(args, port: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "NIGHTREC_STORE": f"file://{args.work / 'store'}",
        "NIGHTREC_HOME": str(args.work / "home"),
        "NIGHTREC_SERVE__POLL_S": "0.5",
    }
    cmd = [sys.executable, "-m", "nightrec.cli", "api", "--port", str(port), "--workers", str(args.workers)]
    log = (args.work / "api.log").open("w")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_ready(base: str, deadline_s: float = 300) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < deadline_s:
        try:
            if json.loads(_get(f"{base}/readyz"))["ready"]:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API at {base} was not ready in {deadline_s} s")


def _wrk(base: str, users: int, seconds: int) -> dict:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        "math.randomseed(os.time())\n"
        "request = function()\n"
        f'  return wrk.format("GET", string.format("/v1/recs/u%07d", math.random(0, {users - 1})))\n'
        "end\n"
    )
    out = subprocess.run(
        ["wrk", "-t1", "-c64", f"-d{seconds}s", "--latency", "-s", str(script), base],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    script.unlink()

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)] if m else float("nan")

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": ms("50%"),
        "p99": ms("99%"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def _autocannon(base: str, users: int, rate: int, seconds: int, connections: int = 16) -> dict:
    if not (NODE / "node_modules" / "autocannon").exists():
        subprocess.run(["npm", "install", "--silent", "--prefix", str(NODE), "autocannon@8"], check=True)
    out = subprocess.run(
        ["node", str(HERE / "serve_load.js"), base, str(users), str(rate), str(seconds), str(connections)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NODE_PATH": str(NODE / "node_modules")},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _redis_anchor(value_bytes: int, seconds_hint: int) -> dict | None:
    if not shutil.which("redis-server") or not shutil.which("redis-benchmark"):
        return None
    port = _free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        base = ["redis-benchmark", "-p", str(port), "-r", "1000000", "-d", str(value_bytes), "--csv"]
        subprocess.run([*base, "-t", "set", "-n", "1000000", "-c", "64"], capture_output=True, check=True)
        rows = (
            subprocess.run(
                [*base, "-t", "get", "-n", str(20_000 * seconds_hint), "-c", "64"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
        header = [h.strip('"') for h in rows[0].split(",")]
        values = [v.strip('"') for v in rows[-1].split(",")]
        got = dict(zip(header, values, strict=True))
        return {
            "rps": float(got["rps"]),
            "p50": float(got["p50_latency_ms"]),
            "p99": float(got["p99_latency_ms"]),
        }
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--top-k", type=int, default=20)
    ap.add_argument("--parts", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "nightrec-bench-serve")
    ap.add_argument("--reuse", action="store_true", help="keep the snapshots of an earlier run of this size")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serve.md")
    args = ap.parse_args()
    for tool in ("wrk", "node", "npm"):
        if not shutil.which(tool):
            sys.exit(f"bench/serve.py needs {tool}: apt-get install wrk nodejs npm redis-server")
    shape = f"{args.users}-{args.items}-{args.top_k}-{args.parts}"
    store_path = args.work / "store"
    t0 = time.perf_counter()
    reused = args.reuse and (args.work / "shape").exists() and (args.work / "shape").read_text() == shape
    if reused:
        keys = [snapshot.manifest_key(DS + timedelta(days=n), f"night-{n}") for n in range(4)]
    else:
        shutil.rmtree(args.work, ignore_errors=True)
        args.work.mkdir(parents=True)
        keys = _setup(args, open_store(f"file://{store_path}"))
        (args.work / "shape").write_text(shape)
    store = open_store(f"file://{store_path}")
    manifests = {k: snapshot.load_manifest(store, k) for k in keys}
    store.delete([pointer.POINTER_KEY]) if store.head(pointer.POINTER_KEY) else None
    pointer.flip_live(store, manifests[keys[0]], keys[0])
    setup_s = time.perf_counter() - t0

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    api = _start_api(args, port)
    try:
        ready_s = _wait_ready(base)
        time.sleep(2.0 * args.workers)  # every worker has its snapshot (each loads its own)
        metrics = _get(f"{base}/metrics").decode()
        load_s = _gauge(metrics, "nightrec_api_snapshot_load_seconds")
        rss_one = _rss_mib(api.pid)
        body_bytes = len(_get(f"{base}/v1/recs/u0000001"))
        _wrk(base, args.users, 3)  # warm-up
        peak = _wrk(base, args.users, args.seconds)
        fixed = _autocannon(base, args.users, args.rate, args.seconds)

        # Three flips and a rollback while the fixed rate runs.
        swap_s = max(args.seconds, 4 * (load_s + 4))
        result: dict = {}
        import threading

        def load() -> None:
            result.update(_autocannon(base, args.users, args.rate, int(swap_s) + 6))

        runner = threading.Thread(target=load)
        runner.start()
        step = swap_s / 4
        for key in keys[1:]:
            time.sleep(step)
            pointer.flip_live(store, manifests[key], key)
        time.sleep(step)
        pointer.rollback(store, keys[2])
        runner.join()
        rss_two = _rss_mib(api.pid)
        readyz = json.loads(_get(f"{base}/readyz"))
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(30)
    anchor = _redis_anchor(body_bytes, args.seconds)

    published = {f"ds={m.ds};generation={m.generation};run={m.run_id}" for m in manifests.values()}
    seen = result.get("snapshots", {})
    lines = [
        f"## Serving: `nightrec api`, {args.users:,} users x K={args.top_k} ({platform.machine()}, "
        f"{os.cpu_count()} CPUs, load generator on the same cores)",
        "",
        f"`bench/serve.py`: a snapshot of {args.parts} parts in a local store, `nightrec api --workers "
        f"{args.workers}` (uvicorn, uvloop, httptools), random known users; one answer is {body_bytes} bytes "
        "of JSON.",
        "",
        "| measure | value | goal |",
        "| --- | ---: | --- |",
        f"| snapshot load (fetch, verify sha256, index), per worker | {load_s:.1f} s | |",
        f"| ready after start | {ready_s:.1f} s | |",
        f"| resident memory, all workers, one snapshot each | {rss_one:,.0f} MiB | |",
        f"| resident memory after the swaps (current + previous each) | {rss_two:,.0f} MiB | |",
        f"| most requests/s (wrk, 64 connections) | {peak['rps']:,.0f} | >= 10,000 |",
        f"| p50 / p99 at that load | {peak['p50']:.1f} / {peak['p99']:.1f} ms | |",
        f"| p50 / p99 at a fixed {args.rate:,} requests/s (autocannon, 16 connections) | "
        f"{fixed['p50']:.1f} / {fixed['p99']:.1f} ms | p99 <= 10 ms |",
        f"| non-2xx during that run | {fixed['non2xx'] + fixed['errors']} | 0 |",
        f"| requests during 3 flips and a rollback ({swap_s:.0f} s at {args.rate:,}/s) | "
        f"{result.get('requests', 0):,} | |",
        f"| non-2xx / errors / timeouts during the swaps | {result.get('non2xx')} / {result.get('errors')} / "
        f"{result.get('timeouts')} | 0 |",
        f"| snapshots the answers named | {len(seen)} (all published: {set(seen) <= published}) | 4 |",
    ]
    if anchor:
        lines.append(
            f"| anchor: redis-benchmark GET of {body_bytes} bytes, 64 connections | {anchor['rps']:,.0f}/s, "
            f"p50 {anchor['p50']:.2f} ms, p99 {anchor['p99']:.2f} ms | |"
        )
    lines += [
        "",
        "Answers per snapshot during the swaps: "
        + ", ".join(f"{tag}: {n:,}" for tag, n in sorted(seen.items()))
        + f". Serving at the end: {readyz.get('snapshot')}.",
        "",
        f"Setup (lists, 4 snapshots) {setup_s:.0f} s{' (reused)' if reused else ''}, not timed above. "
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
