"""One SparkSession per process, configured from settings."""

from __future__ import annotations

import os
import subprocess

from pyspark.sql import SparkSession

from nightrec.io import spark_archive
from nightrec.settings import SparkSettings

JVM_OPTIONS = "-XX:+UseParallelGC -XX:FreqInlineSize=100 -XX:InlineSmallCode=1000"


def session_conf(cfg: SparkSettings) -> dict[str, str]:
    """The session settings every nightrec Spark session runs with, in-process or on a Spark Connect server."""
    return {
        "spark.sql.shuffle.partitions": str(cfg.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Cached frames (the deduplicated events) are written once and read a few times within minutes: the
        # columnar compression of the cache cost more CPU than it saved (10M events: ~7 s of ~45 s executor
        # time), and an uncompressed cache that outgrows memory still spills to disk.
        "spark.sql.inMemoryColumnarStorage.compressed": "false",
    }


def get_spark(cfg: SparkSettings, app_name: str = "nightrec") -> SparkSession:
    """Return the process's SparkSession, creating it on first use (tasks and subflows share it).

    With ``cfg.remote`` it is a Spark Connect session on that server. PySpark then runs the whole process in
    Connect mode (it switches its functions over), so a process uses one kind of session, never both.
    """
    if cfg.remote:
        builder = SparkSession.builder.remote(cfg.remote).appName(app_name)
        for k, v in {**session_conf(cfg), **cfg.extra_conf}.items():
            builder = builder.config(k, v)
        return builder.getOrCreate()
    # Without this Spark picks the host's first non-loopback address and warns; clusters set it themselves.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # The driver JVM starts from the class archive that `make install` built, where there is one.
    driver_options = f"{JVM_OPTIONS} {spark_archive.jvm_options() if cfg.class_archive else ''}".strip()
    builder = (
        SparkSession.builder.master(cfg.master)
        .appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.driver.maxResultSize", cfg.max_result_size)
        # Applies where Spark starts the JVM. A batch job wants throughput, not short pauses: the parallel
        # collector's cheaper write barriers saved ~10% executor CPU against G1 on the feature ETL. A nightly
        # JVM is cold, and most of what it JIT-compiles is Spark itself (planner, serializers, Janino), not
        # the hot loops: with HotSpot's default inlining budget the C2 compiler took more CPU than the tasks
        # at 1M events and two thirds of it at 10M. A smaller budget cut compile CPU by a fifth with no
        # measurable loss in task CPU.
        .config("spark.driver.extraJavaOptions", driver_options)
        .config("spark.executor.extraJavaOptions", JVM_OPTIONS)
    )
    for k, v in {**session_conf(cfg), **cfg.extra_conf}.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def release() -> bool:
    """Stop this process's Spark session and end its driver JVM, so its heap goes back to the machine.

    ``SparkSession.stop()`` alone leaves the JVM running with the heap it grew (ParallelGC keeps it): at
    100M events that is most of ``driver_memory`` held through training and scoring. The JVM exits when the
    pipe PySpark holds to its stdin closes. A later :func:`get_spark` starts a fresh one. Returns whether
    there was a JVM to end (False in Spark Connect mode, or when none was started).
    """
    from pyspark import SparkContext

    active = SparkSession.getActiveSession() if SparkContext._jvm is not None else None
    if active is not None:
        active.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return False
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    if proc is not None:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    SparkContext._gateway = None
    SparkContext._jvm = None
    return True
