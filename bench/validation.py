"""Validation cost against ETL cost on generated events (issue 3: validation <= 20% of the ETL time).

Usage: .venv/bin/python bench/validation.py --events 1000000 [--out /tmp/bench-validation]
Times build_features (the ETL) and the raw and feature gates on the same data, same SparkSession.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-validation"))
    ap.add_argument("--driver-memory", default="6g")
    args = ap.parse_args()

    from nightrec.data import synthetic
    from nightrec.features import build
    from nightrec.io.spark import get_spark
    from nightrec.settings import Settings, SparkSettings
    from nightrec.validation import gates

    users = max(args.events // 100, 100)
    raw = args.out / f"raw-{args.events}"
    if not (raw / "events").exists():
        t = time.perf_counter()
        g = synthetic.generate(users, max(users // 5, 200), 60, raw, seed=1, events_per_user=100.0)
        print(f"generated {g.n_events} events in {time.perf_counter() - t:.1f} s")
    home = args.out / "home"
    shutil.rmtree(home, ignore_errors=True)
    s = Settings(home=home, spark=SparkSettings(driver_memory=args.driver_memory, max_result_size="256m"))
    spark = get_spark(s.spark)
    ds = date(2026, 11, 22)
    # Warm-up on a tiny data set, so JIT and first-use costs of Spark and GX stay out of the timings.
    tiny = args.out / "raw-warmup"
    if not (tiny / "events").exists():
        synthetic.generate(300, 150, 40, tiny, seed=3, events_per_user=40.0)
    warm = Settings(home=args.out / "home-warmup", spark=s.spark)
    gates.validate_raw(spark, tiny, warm, ds)
    build.build_features(spark, tiny, warm.lake, ds, warm.features, force=True)
    gates.validate_features(spark, warm, ds)

    timings = {}
    t = time.perf_counter()
    raw_report = gates.validate_raw(spark, raw, s, ds)
    timings["validate_raw"] = time.perf_counter() - t
    t = time.perf_counter()
    summary = build.build_features(spark, raw, s.lake, ds, s.features, force=True)
    timings["build_features (ETL)"] = time.perf_counter() - t
    t = time.perf_counter()
    feat_report = gates.validate_features(spark, s, ds)
    timings["validate_features"] = time.perf_counter() - t

    etl = timings["build_features (ETL)"]
    total = timings["validate_raw"] + timings["validate_features"]
    n_events = raw_report.stats["tables"]["events"]["rows"]
    print(f"\n{n_events} events; raw gate {raw_report.success}, feature gate {feat_report.success}")
    print(f"feature rows: {summary.rows}")
    print("| step | seconds | share of ETL |\n| --- | --- | --- |")
    for k, v in timings.items():
        print(f"| {k} | {v:.1f} | {v / etl:.0%} |")
    print(f"| validation total | {total:.1f} | {total / etl:.0%} |")


if __name__ == "__main__":
    main()
