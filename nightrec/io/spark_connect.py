"""A Spark Connect server from the PySpark wheel: the long-running Spark that `spark.remote` points at.

A nightly stage that starts its own JVM pays that JVM's warm-up every night (at 10M events about as much CPU
compiling Spark as doing the work, `bench/results/etl.md`). A Spark Connect server is a driver that outlives
the stages: the first night after it starts is cold, the next ones run on code it has already compiled. On a
cluster, run Spark's own `sbin/start-connect-server.sh` against the cluster's master; this module starts one
on loopback, for a single machine and for the tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyspark

from nightrec.io import spark_archive
from nightrec.io.spark import JVM_OPTIONS

SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def start_server(
    port: int,
    log_path: Path,
    *,
    master: str = "local[*]",
    driver_memory: str = "4g",
) -> subprocess.Popen:
    """Start a Spark Connect server on 127.0.0.1:``port`` (its output to ``log_path``); see ``wait_ready``."""
    home = Path(pyspark.__file__).parent
    options = f"{JVM_OPTIONS} {spark_archive.jvm_options()}".strip()
    settings = {
        "spark.connect.grpc.binding.address": "127.0.0.1",
        "spark.connect.grpc.binding.port": str(port),
        "spark.ui.enabled": "false",
        "spark.driver.extraJavaOptions": options,
    }
    cmd = [str(home / "bin" / "spark-submit"), "--master", master, "--driver-memory", driver_memory]
    for k, v in settings.items():
        cmd += ["--conf", f"{k}={v}"]
    cmd += ["--class", SERVER_CLASS, "--name", "nightrec Spark Connect server", "spark-internal"]
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(proc: subprocess.Popen, port: int, log_path: Path, timeout_s: float = 180) -> str:
    """Wait until the server accepts connections; return its ``sc://`` URL, or raise with its log's tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return f"sc://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.5)
    tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else "(no log)"
    state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not up after {timeout_s:.0f}s"
    raise RuntimeError(f"Spark Connect server on port {port} {state}; {log_path}:\n{tail}")


def stop_server(proc: subprocess.Popen, timeout_s: float = 120) -> None:
    """Stop the server (SIGTERM, then SIGKILL if it has not exited within ``timeout_s``)."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def serving(
    log_path: Path, *, port: int | None = None, master: str = "local[*]", driver_memory: str = "4g"
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A server for the ``with`` block, on ``port`` or a free one: yields its ``sc://`` URL and its process."""
    if port is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    proc = start_server(port, log_path, master=master, driver_memory=driver_memory)
    try:
        yield wait_ready(proc, port, log_path), proc
    finally:
        stop_server(proc)


def main(argv: list[str] | None = None) -> None:
    """Run a Spark Connect server in the foreground until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=15002)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--log", type=Path, default=Path("spark-connect.log"))
    args = parser.parse_args(argv)
    serve = serving(args.log, port=args.port, master=args.master, driver_memory=args.driver_memory)
    with serve as (url, proc):
        print(f"Spark Connect server at {url} (log {args.log}); set NIGHTREC_SPARK__REMOTE={url}", flush=True)
        try:
            proc.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
