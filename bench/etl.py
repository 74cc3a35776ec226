"""Spark feature aggregates against the DuckDB reference on generated events: events/s and peak memory.

Usage: .venv/bin/python bench/etl.py [--events 1000000 10000000] [--out /tmp/bench-etl]
Writes bench/results/etl.md for the default sizes; other sizes (``--events 100000000``, the scale check) go to
their own file, bench/results/etl_100m.md, so that a large run never replaces the 1M/10M figures. Each engine
runs in its own process (so peak RSS is its own: for Spark the driver JVM and the Python side together), on the
same raw Parquet files, computing per-user and per-item features as of the run date and writing them to
Parquet. Session start-up is reported apart from the timed work.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


DEFAULT_EVENTS = [1_000_000, 10_000_000]
# Events a shuffle partition holds at most: 10M events in 4 partitions deduplicate and cache without spilling
# in an 8g driver; a larger input gets more partitions rather than larger ones (100M: 36).
EVENTS_PER_PARTITION = 3_000_000


def shuffle_partitions(n_events: int, threads: int) -> int:
    """Two tasks a core, more when a task would hold more than ``EVENTS_PER_PARTITION`` events; always a
    multiple of the cores, so that the last wave of tasks keeps every core busy."""
    waves = -(-n_events // (EVENTS_PER_PARTITION * threads))
    return threads * max(2, waves)


def _feature_pass(spark, raw: Path, out: Path, run_date: date, cfg) -> int:
    """One pass of the timed work on ``spark`` (in-process or Spark Connect); returns the replays dropped."""
    from pyspark.sql import functions as F

    from nightrec.features import events as ev
    from nightrec.features import point_in_time, vocab
    from nightrec.io import raw as raw_io

    # The steps of build.build_features, with the same production functions, for the serve role only (what
    # the DuckDB reference computes): no lake writes of vocabularies and interactions, no examples.
    items = raw_io.read_raw_table(spark, raw, "items").dropDuplicates(["item_id"]).persist()
    users = raw_io.read_raw_table(spark, raw, "users").dropDuplicates(["user_id"]).persist()
    events = raw_io.read_raw_table(spark, raw, "events")
    item_map = vocab.lookup(
        vocab.extend_vocab(None, items.select(F.col("item_id").alias("value")), "item_id"),
        "item_id",
        "item_id",
        "item_idx",
    ).persist()
    cat_map = vocab.lookup(
        vocab.extend_vocab(None, items.select(F.col("category").alias("value")), "category"),
        "category",
        "category",
        "category_idx",
    )
    # No user or segment vocabulary (DuckDB keys by raw id): empty mappings, made in the JVM. From a Python
    # list, createDataFrame scans an RDD that starts a Python worker, time no production run spends.
    user_map = spark.sql("SELECT CAST(NULL AS STRING) AS user_id, CAST(NULL AS INT) AS user_idx LIMIT 0")
    seg_map = spark.sql("SELECT CAST(NULL AS STRING) AS segment, CAST(NULL AS INT) AS segment_idx LIMIT 0")
    # As build_features does: deduplicated once (partitioned by user), indexed, cached, read by both builders.
    catalog = ev.catalog_index(items, item_map)
    clean = ev.clean_events(events, catalog, run_date, cfg, copies=True)
    inter = ev.index_interactions(clean, user_map).persist()
    duplicates = ev.duplicates_dropped(inter)
    item_features = point_in_time.build_item_features(
        inter, items, item_map, cat_map, run_date, cfg.popularity_days, "serve"
    ).persist()
    item_features.write.mode("overwrite").parquet(str(out / "spark_items"))
    item_cats = item_features.select("item_idx", "category_idx").where(F.col("item_idx") > 0)
    prices = items.select("item_id", "price").join(item_map, "item_id", "inner").select("item_idx", "price")
    point_in_time.build_user_features(
        inter, users, user_map, seg_map, item_cats, run_date, cfg.history_len, "serve", prices
    ).write.mode("overwrite").parquet(str(out / "spark_users"))
    return duplicates


def _cpu_meter(pid: int | None = None) -> Callable[[], float]:
    """CPU seconds so far of process ``pid`` (default: this one) and its children (for Spark, the driver JVM)."""
    import psutil

    me = psutil.Process(pid)

    def read() -> float:
        tree = [me, *me.children(recursive=True)]
        return sum(t.user + t.system for t in (p.cpu_times() for p in tree))

    return read


def _spark_worker(raw: Path, out: Path, run_date: date, threads: int, n_events: int) -> dict:
    t0 = time.perf_counter()
    from nightrec.io.spark import get_spark
    from nightrec.settings import FeatureSettings, SparkSettings

    cfg = FeatureSettings()
    spark = get_spark(
        SparkSettings(
            master=f"local[{threads}]",
            driver_memory="8g",
            shuffle_partitions=shuffle_partitions(n_events, threads),
        )
    )
    started = time.perf_counter() - t0
    cpu = _cpu_meter()
    # HotSpot's own accounting: time its JIT compiler threads and its collector took, which a cold JVM pays
    # and a warm one mostly does not.
    jmx = spark._jvm.java.lang.management.ManagementFactory

    def jit_s() -> float:
        return jmx.getCompilationMXBean().getTotalCompilationTime() / 1000

    def gc_s() -> float:
        return sum(b.getCollectionTime() for b in jmx.getGarbageCollectorMXBeans()) / 1000

    def one_pass() -> tuple[float, int, dict]:
        t, c, j, g = time.perf_counter(), cpu(), jit_s(), gc_s()
        duplicates = _feature_pass(spark, raw, out, run_date, cfg)
        seconds = time.perf_counter() - t
        spent = {"cpu_s": cpu() - c, "jit_s": jit_s() - j, "gc_s": gc_s() - g}
        spark.catalog.clearCache()
        return seconds, duplicates, spent

    # The first pass is what a nightly run pays (a fresh JVM compiles Spark's own code as it goes); the second,
    # in the same JVM, is the steady-state cost of the work itself.
    seconds, duplicates, first = one_pass()
    warm, _, second = one_pass()
    spark.stop()
    return {
        "startup_s": started,
        "seconds": seconds,
        "warm_s": warm,
        "duplicates": duplicates,
        "cpu_s": first["cpu_s"],
        "warm_cpu_s": second["cpu_s"],
        "jit_s": first["jit_s"],
        "warm_jit_s": second["jit_s"],
        "gc_s": first["gc_s"],
        "warm_gc_s": second["gc_s"],
    }


def _connect_worker(url: str, raw: Path, out: Path, run_date: date, n_events: int, threads: int) -> dict:
    """One night as a stage process on a Spark Connect server runs it: connect, one pass, disconnect."""
    t0 = time.perf_counter()
    from nightrec.io.spark import get_spark
    from nightrec.settings import FeatureSettings, SparkSettings

    spark = get_spark(SparkSettings(remote=url, shuffle_partitions=shuffle_partitions(n_events, threads)))
    started = time.perf_counter() - t0
    t = time.perf_counter()
    duplicates = _feature_pass(spark, raw, out, run_date, FeatureSettings())
    seconds = time.perf_counter() - t
    spark.catalog.clearCache()  # the server's cache outlives the session: the next night must not find it
    return {"startup_s": started, "seconds": seconds, "duplicates": duplicates}


def run_connect_nights(
    raw: Path, out: Path, run_date: date, threads: int, n_events: int, nights: int
) -> dict:
    """Start a Spark Connect server (``local[threads]``, 8g, as the in-process runs), then run ``nights``
    passes, each from a fresh client process as a nightly stage would be; the server's CPU time per night."""
    from nightrec.io import spark_connect

    t0 = time.perf_counter()
    serve = spark_connect.serving(out / "spark-connect.log", master=f"local[{threads}]", driver_memory="8g")
    with serve as (url, server):
        started = time.perf_counter() - t0
        server_cpu = _cpu_meter(server.pid)
        runs = []
        for _ in range(nights):
            c = server_cpu()
            cmd = [sys.executable, __file__, "--worker", "connect", "--url", url, "--raw", str(raw)]
            cmd += ["--out", str(out), "--run-date", run_date.isoformat(), "--threads", str(threads)]
            cmd += ["--n-events", str(n_events)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
            if proc.returncode != 0:
                raise RuntimeError(f"connect night failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            runs.append(
                {**json.loads(proc.stdout.strip().splitlines()[-1]), "server_cpu_s": server_cpu() - c}
            )
    return {"server_startup_s": started, "nights": runs}


def _duckdb_worker(raw: Path, out: Path, run_date: date, threads: int, n_events: int) -> dict:
    t0 = time.perf_counter()
    from bench import duckdb_reference as ref
    from nightrec.settings import FeatureSettings

    cfg = FeatureSettings()
    con = ref.connect(threads=threads)
    started = time.perf_counter() - t0
    cpu = _cpu_meter()
    times, cpus = [], []
    for _ in range(2):  # as for Spark: a first pass, then a second in the same process
        t, c = time.perf_counter(), cpu()
        ref.register_clean_events(con, raw, run_date, cfg)
        duplicates = ref.duplicates_dropped(con)
        ref.item_aggregates(con, run_date, cfg.popularity_days).write_parquet(
            str(out / "duckdb_items.parquet")
        )
        ref.user_aggregates(con, run_date, cfg.history_len).write_parquet(str(out / "duckdb_users.parquet"))
        times.append(time.perf_counter() - t)
        cpus.append(cpu() - c)
    return {
        "startup_s": started,
        "seconds": times[0],
        "warm_s": times[1],
        "duplicates": duplicates,
        "cpu_s": cpus[0],
        "warm_cpu_s": cpus[1],
    }


def _run_measured(engine: str, raw: Path, out: Path, run_date: date, threads: int, n_events: int) -> dict:
    """Run one engine in a child process; sample the RSS of its whole process tree every 100 ms."""
    import psutil

    cmd = [sys.executable, __file__, "--worker", engine, "--raw", str(raw), "--out", str(out)]
    cmd += ["--run-date", run_date.isoformat(), "--threads", str(threads), "--n-events", str(n_events)]
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            try:
                tree = [proc, *proc.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, _ = proc.communicate()
    th.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} worker failed with exit code {proc.returncode}")
    result = json.loads(stdout.strip().splitlines()[-1])
    return {**result, "peak_rss_mb": peak[0] / 2**20}


def _generate(n_events: int, out: Path) -> tuple[Path, int, date]:
    from nightrec.data import synthetic

    raw = out / f"raw-{n_events}"
    users = max(n_events // 100, 100)
    marker = raw / "summary.json"
    if not marker.exists():
        g = synthetic.generate(users, max(users // 5, 200), 60, raw, seed=1, events_per_user=100.0)
        marker.write_text(
            json.dumps({"n_events": g.n_events, "run_date": (g.last_day + timedelta(days=1)).isoformat()})
        )
    s = json.loads(marker.read_text())
    return raw, s["n_events"], date.fromisoformat(s["run_date"])


def _label(n: int) -> str:
    return f"{n // 1_000_000}m" if n % 1_000_000 == 0 else str(n)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, nargs="+", default=DEFAULT_EVENTS)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-etl"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--results", type=Path, help="default: etl.md for the default sizes, else etl_<sizes>.md")
    ap.add_argument(
        "--connect-nights",
        type=int,
        default=0,
        help="Also run this many nights against one Spark Connect server (spark.remote), each from a fresh "
        "client process: the first pays the server's cold JVM, the next ones run warm",
    )
    ap.add_argument("--worker", choices=["spark", "duckdb", "connect"])
    ap.add_argument("--url")
    ap.add_argument("--raw", type=Path)
    ap.add_argument("--run-date")
    ap.add_argument("--n-events", type=int)
    args = ap.parse_args()
    if args.worker == "connect":
        r = _connect_worker(
            args.url, args.raw, args.out, date.fromisoformat(args.run_date), args.n_events, args.threads
        )
        print(json.dumps(r))
        return
    if args.worker:
        fn = _spark_worker if args.worker == "spark" else _duckdb_worker
        print(
            json.dumps(fn(args.raw, args.out, date.fromisoformat(args.run_date), args.threads, args.n_events))
        )
        return
    if args.results is None:
        name = "etl" if args.events == DEFAULT_EVENTS else "etl_" + "_".join(_label(n) for n in args.events)
        args.results = ROOT / "bench" / "results" / f"{name}.md"

    rows, loads, connect = [], [_uptime()], {}
    for n in args.events:
        raw, n_events, run_date = _generate(n, args.out)
        for engine in ("duckdb", "spark"):
            work = args.out / f"out-{n}-{engine}"
            work.mkdir(parents=True, exist_ok=True)
            r = _run_measured(engine, raw, work, run_date, args.threads, n_events)
            rows.append({"engine": engine, "events": n_events, **r})
            print(
                f"{engine:6s} {n_events:>11,d} events: {r['seconds']:.1f} s, {n_events / r['seconds']:,.0f} ev/s, "
                f"peak RSS {r['peak_rss_mb']:,.0f} MB (start-up {r['startup_s']:.1f} s)",
                flush=True,
            )
        if args.connect_nights:
            work = args.out / f"out-{n}-connect"
            work.mkdir(parents=True, exist_ok=True)
            c = run_connect_nights(raw, work, run_date, args.threads, n_events, args.connect_nights)
            connect[n_events] = c
            seconds = ", ".join(f"{night['seconds']:.1f}" for night in c["nights"])
            print(f"connect {n_events:>10,d} events: nights {seconds} s", flush=True)
        loads.append(_uptime())
    _write_results(args.results, rows, loads, args.threads, args.events == DEFAULT_EVENTS, connect)


def _connect_section(connect: dict[int, dict], duck: dict[int, dict]) -> list[str]:
    lines = [
        "",
        "## On a long-running Spark Connect server (`spark.remote`)",
        "",
        "`--connect-nights N`: one Spark Connect server (`nightrec.io.spark_connect`, the same `local[*]`, memory "
        "and JVM options), then N nights of the same work, each from a fresh client process as a nightly stage "
        "connects. Night 1 pays the server's cold JVM; the next ones find Spark compiled. The server's start-up "
        "is excluded; *Spark / DuckDB* is against DuckDB's first pass.",
        "",
        "| events | night | seconds | Spark / DuckDB | server CPU-s |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for n, c in connect.items():
        for i, night in enumerate(c["nights"], 1):
            ratio = night["seconds"] / duck[n]["seconds"]
            lines.append(
                f"| {n:,} | {i} | {night['seconds']:.1f} | {ratio:.1f}x | {night['server_cpu_s']:.1f} |"
            )
        if 10_000_000 <= n < 20_000_000 and len(c["nights"]) > 1:
            later = max(night["seconds"] for night in c["nights"][1:]) / duck[n]["seconds"]
            lines += [
                "",
                f"Goal (issue 7) on a warm server: every night after the first within {later:.1f}x of DuckDB "
                f"({'met' if later <= 5 else 'not met'}); server start-up {c['server_startup_s']:.1f} s.",
            ]
    return lines


def _write_results(
    path: Path, rows: list[dict], loads: list[str], threads: int, default: bool, connect: dict[int, dict]
) -> None:
    sizes = ", ".join(
        f"{_label(r['events'] // 1_000_000 * 1_000_000)}" for r in rows if r["engine"] == "spark"
    )
    title = "# Feature ETL: Spark against the DuckDB reference"
    flag = f" --connect-nights {len(next(iter(connect.values()))['nights'])}" if connect else ""
    lines = [
        title if default else f"{title}, scale check ({sizes} events)",
        "",
        f"Generated by `.venv/bin/python bench/etl.py{flag}`. Work timed: dedupe + weight the events, then per-user "
        "(counts by type over 1/7/30 days, recency, category affinity, mean price) and per-item (popularity "
        "windows, trend, smoothed CTR, age, price decile) features as of the run date, with each user's last-20 "
        "history list, written to Parquet (the test suite checks that both engines give the same values). Spark "
        "also builds the item and category vocabularies; DuckDB keys by raw id. Start-up (JVM, session) "
        f"is excluded from the time and shown apart. {threads} threads each (Spark `local[{threads}]`, 8g "
        f"driver, {threads * 2} shuffle partitions up to {EVENTS_PER_PARTITION * threads * 2 // 10**6}M events, "
        f"then {threads} more per {EVENTS_PER_PARTITION * threads // 10**6}M); peak RSS is the engine's whole process "
        "tree.",
        "",
        "Each engine runs the work twice in its process: *first pass* is what a nightly run pays (for Spark, a "
        "fresh JVM that compiles Spark's own code as it goes), *second pass* the steady-state cost of the work. "
        "*CPU-s* is the engine's process tree's CPU time in each pass (first / second); for Spark, *JIT* and "
        "*GC* are the seconds HotSpot's compiler threads and its collector took in them (JMX), the part of the "
        "CPU that is the JVM warming up rather than the work.",
        "",
        "| events | engine | first pass (s) | events/s | Spark / DuckDB | second pass (s) | Spark / DuckDB "
        "| CPU-s | JIT s | GC s | peak RSS (MB) | start-up (s) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    duck = {r["events"]: r for r in rows if r["engine"] == "duckdb"}
    for r in rows:
        spark = r["engine"] == "spark"
        ratio = f"{r['seconds'] / duck[r['events']]['seconds']:.1f}x" if spark else ""
        warm_ratio = f"{r['warm_s'] / duck[r['events']]['warm_s']:.1f}x" if spark else ""
        jvm = [f"{r[k]:.1f} / {r['warm_' + k]:.1f}" if k in r else "" for k in ("jit_s", "gc_s")]
        lines.append(
            f"| {r['events']:,} | {r['engine']} | {r['seconds']:.1f} | {r['events'] / r['seconds']:,.0f} | "
            f"{ratio} | {r['warm_s']:.1f} | {warm_ratio} | {r['cpu_s']:.1f} / {r['warm_cpu_s']:.1f} | "
            f"{jvm[0]} | {jvm[1]} | {r['peak_rss_mb']:,.0f} | {r['startup_s']:.1f} |"
        )
    at_10m = [r for r in rows if r["engine"] == "spark" and 10_000_000 <= r["events"] < 20_000_000]
    for r in at_10m:
        d = duck[r["events"]]
        first, warm = r["seconds"] / d["seconds"], r["warm_s"] / d["warm_s"]
        lines += [
            "",
            f"Goal (issue 7): Spark within 5x of DuckDB at 10M events. First pass {first:.1f}x "
            f"({'met' if first <= 5 else 'not met'}), second pass {warm:.1f}x ({'met' if warm <= 5 else 'not met'}).",
        ]
    if connect:
        lines += _connect_section(connect, duck)
    lines += ["", "Machine load (`uptime`) before the run and after each size, shared with other jobs:", ""]
    lines += [f"- `{u}`" for u in loads]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
