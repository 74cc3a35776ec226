"""Ending the Spark driver JVM after the night's Spark stages: its memory is returned, and Spark can start again."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# In a process of its own: the suite's shared session must not be the one that ends.
SCRIPT = """
import json, psutil
from pyspark import SparkContext
from nightrec.io import spark
from tests.conftest import TEST_SPARK

def jvms():
    return [p.pid for p in psutil.Process().children(recursive=True) if "java" in p.name()]

s = spark.get_spark(TEST_SPARK, app_name="release-test")
before = jvms()
rows = s.range(10).count()
released = spark.release()
after = jvms()
again = spark.get_spark(TEST_SPARK, app_name="release-test").range(5).count()
restarted = jvms()
released_twice = [spark.release(), spark.release()]
print(json.dumps(dict(before=before, rows=rows, released=released, after=after, again=again,
                      restarted=restarted, released_twice=released_twice, left=jvms())))
"""


def test_release_ends_the_driver_jvm_and_a_later_session_starts_a_new_one():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(r["before"]) == 1 and r["rows"] == 10
    assert r["released"] is True and r["after"] == []  # the JVM process is gone, not only the session
    assert r["again"] == 5 and len(r["restarted"]) == 1 and r["restarted"] != r["before"]
    assert r["released_twice"] == [True, False] and r["left"] == []
