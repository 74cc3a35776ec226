"""Build the Spark class-data-sharing archive (``nightrec.io.spark_archive`` says what it is and why).

``make install`` runs ``python -m nightrec.ops.spark_archive``: a small feature build on generated data in a
JVM started with ``-XX:ArchiveClassesAtExit``, written where ``get_spark`` looks for it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from nightrec.io.spark_archive import QUIET, archive_path


def _train(dump_to: Path) -> None:
    """Run a small feature build in a JVM that writes its loaded classes to ``dump_to`` when it exits."""
    from pyspark import SparkContext

    from nightrec.data import synthetic
    from nightrec.features.build import build_features
    from nightrec.io.spark import JVM_OPTIONS, get_spark
    from nightrec.settings import FeatureSettings, SparkSettings

    with tempfile.TemporaryDirectory(prefix="nightrec-cds-") as tmp:
        raw = Path(tmp) / "raw"
        g = synthetic.generate(300, 80, 40, raw, seed=0, events_per_user=30.0)
        options = f"{JVM_OPTIONS} -XX:ArchiveClassesAtExit={dump_to} {QUIET}"
        spark = get_spark(
            SparkSettings(
                class_archive=False,
                extra_conf={"spark.driver.extraJavaOptions": options},
            ),
            app_name="nightrec-class-archive",
        )
        run_date = g.last_day + timedelta(days=1)
        build_features(spark, raw, str(Path(tmp) / "lake"), run_date, FeatureSettings())
        gateway = SparkContext._gateway
        spark.stop()
        # The archive is written as the JVM exits: it exits when its stdin closes (PySpark's gateway server
        # watches it), and the dump must be complete before the file is moved into place.
        gateway.proc.stdin.close()
        gateway.proc.wait(timeout=300)


def build_archive(force: bool = False) -> Path | None:
    """Build this environment's archive unless it exists; returns its path, or None where it failed.

    Never raises: without an archive Spark only starts slower, so a failure is reported and install goes on.
    """
    final = archive_path()
    if final.exists() and not force:
        return final
    partial = final.with_name(f".{final.name}.{os.getpid()}")
    started = time.monotonic()
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "nightrec.ops.spark_archive", "--train", str(partial)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        said = (proc.stderr or proc.stdout)[-2000:] if proc.returncode != 0 or not partial.exists() else None
    except (OSError, subprocess.TimeoutExpired) as e:
        said = str(e)
    if said is not None:
        partial.unlink(missing_ok=True)
        print(f"nightrec: no Spark class archive (Spark starts ~1 s slower); the build said:\n{said}")
        return None
    os.replace(partial, final)  # another process may read it at once: only a complete file is ever there
    print(
        f"nightrec: Spark class archive {final} ({final.stat().st_size / 2**20:.0f} MiB, "
        f"{time.monotonic() - started:.0f} s)"
    )
    return final


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the archive exists")
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train:
        _train(args.train)
    else:
        build_archive(force=args.force)


if __name__ == "__main__":
    main()
