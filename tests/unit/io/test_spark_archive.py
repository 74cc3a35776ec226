"""The class-data-sharing archive that `make install` builds: Spark's JVM loads its classes from it."""

from __future__ import annotations

import os
import subprocess
import sys

from nightrec.io import spark_archive
from nightrec.ops import spark_archive as archive_build

_START = """
from nightrec.io.spark import get_spark
from nightrec.settings import SparkSettings
spark = get_spark(SparkSettings(master="local[1]"))
df = spark.range(100)
assert df.groupBy((df.id % 3).alias("k")).count().count() == 3
spark.stop()
"""


def test_the_driver_jvm_loads_spark_classes_from_the_archive(tmp_path):
    archive = archive_build.build_archive()  # made by `make install`; built here where it was not
    assert archive is not None and archive == spark_archive.archive_path() and archive.stat().st_size > 2**20
    log = tmp_path / "classes.log"
    env = {**os.environ, "JAVA_TOOL_OPTIONS": f"-Xlog:class+load=info:file={log}"}
    script = tmp_path / "start.py"
    script.write_text(_START)
    subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True, timeout=300)
    # Spark SQL's classes, less the lambda classes that the JVM spins at run time (never archived).
    loads = [
        ln for ln in log.read_text().splitlines() if "org.apache.spark.sql." in ln and "Lambda" not in ln
    ]
    from_jars = [ln for ln in loads if "source: file:" in ln]
    from_archive = [ln for ln in loads if "source: shared objects file (top)" in ln]
    # Almost all come from the archive; the few others were not used by the training build (a Range here).
    assert len(loads) > 1000 and len(from_archive) > 0.95 * len(loads), (len(from_archive), len(loads))
    assert len(from_jars) < 0.05 * len(loads), from_jars[:10]


def test_a_stale_or_corrupt_archive_only_costs_the_speed_up(tmp_path):
    bad = tmp_path / "bad.jsa"
    bad.write_bytes(b"not a CDS archive" * 100)
    java = spark_archive._java()
    quiet = spark_archive.QUIET.split()
    proc = subprocess.run(
        [java, f"-XX:SharedArchiveFile={bad}", *quiet, "-version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "version" in proc.stderr and "warning" not in proc.stderr.lower()
