"""build_features on real separate executor JVMs writes what local mode writes, row for row: on ``local-cluster``
and on a standalone master with two workers (the Spark of ``nightrec stack``, as compose runs it).

Local mode hides what a cluster exposes: closures and broadcasts are serialised to other processes, and no
driver-side state is shared with the tasks. The build runs in a subprocess because one Python process holds
one SparkContext (the session fixture's, in local mode).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyspark
import pytest

from nightrec.features import build
from nightrec.ops.stack import Stack
from tests.unit.features import _lake_compare as lc
from tests.unit.features.conftest import CFG, RUN_DATE, clean_build  # noqa: F401  (the shared clean build)

pytestmark = [pytest.mark.slow, pytest.mark.spark]

_CLUSTER_RUN = """
import sys
import time
from datetime import date
from nightrec.features import build
from nightrec.ops.stack import Stack
from nightrec.io.spark import get_spark
from nightrec.settings import FeatureSettings, SparkSettings
raw, lake_root, ds, work, master = sys.argv[1:6]
conf = {{"spark.worker.dir": work, "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
        "spark.executor.cores": "1", "spark.executor.memory": "768m"}}
spark = get_spark(SparkSettings(master=master, driver_memory="1g", shuffle_partitions=2,
                                max_result_size="32m", extra_conf=conf))
# Two executor processes besides the driver, or this test proves nothing about a cluster (they register
# asynchronously after the session starts).
deadline = time.monotonic() + 90
while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() < 3:
    assert time.monotonic() < deadline, "executors did not register"
    time.sleep(0.5)
summary = build.build_features(spark, raw, lake_root, date.fromisoformat(ds),
                               FeatureSettings(holdout_days={holdout}, valid_days={valid},
                                               negatives_per_positive={neg}))
print("WRITTEN", ",".join(summary.written))
spark.stop()
"""


def _spark_home_with_own_work_dir(home: Path) -> tuple[Path, Path]:
    """A SPARK_HOME of links to the pip wheel's folders plus a real ``work/``.

    local-cluster workers ignore spark.worker.dir and SPARK_WORKER_DIR and put executor folders under
    $SPARK_HOME/work, which would be inside site-packages.
    """
    wheel = Path(pyspark.__file__).parent
    home.mkdir()
    for entry in wheel.iterdir():
        if entry.name != "work":
            (home / entry.name).symlink_to(entry)
    (home / "work").mkdir()
    return home, home / "work"


def cluster_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """(environment, executor work dir) for a subprocess that starts a local-cluster session."""
    spark_home, work = _spark_home_with_own_work_dir(tmp_path / "spark-home")
    env = {
        **os.environ,
        "SPARK_HOME": str(spark_home),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_WORKER_DIR": str(work),
        "PYSPARK_PYTHON": sys.executable,
    }
    return env, work


def _build_on(master: str, raw, lake_root: str, env: dict, work: Path) -> None:
    code = textwrap.dedent(
        _CLUSTER_RUN.format(holdout=CFG.holdout_days, valid=CFG.valid_days, neg=CFG.negatives_per_positive)
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(raw), lake_root, RUN_DATE.isoformat(), str(work), master],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WRITTEN " + ",".join(["vocab", "interactions", "item_features", "user_features"]) in proc.stdout


def _assert_same_lake(clean: str, lake_root: str) -> None:
    for table in (t.name for t in build.OUTPUTS):
        lc.assert_same_frames(
            lc.read_frame(clean, table, RUN_DATE), lc.read_frame(lake_root, table, RUN_DATE), table
        )


def test_local_cluster_build_equals_local_mode(tiny_raw, clean_build, tmp_path):  # noqa: F811
    lake_root = str(tmp_path / "lake")
    env, work = cluster_env(tmp_path)
    _build_on("local-cluster[2,1,1024]", tiny_raw, lake_root, env, work)
    assert any(work.iterdir()), "executors should have used the given work dir"
    _assert_same_lake(clean_build.lake, lake_root)


def test_standalone_cluster_build_equals_local_mode(tiny_raw, clean_build, tmp_path):  # noqa: F811
    # The master and two workers of `nightrec stack` (spark-class processes of the pip wheel), nothing else.
    stack = Stack.open(tmp_path / "stack")
    spark_only = ["spark-master", *(f"spark-worker-{i}" for i in range(1, stack.spark_workers + 1))]
    try:
        stack.up(only=spark_only)
        env = {**stack.env("worker-spark"), "PYSPARK_PYTHON": sys.executable}
        lake_root = str(tmp_path / "lake")
        _build_on(f"spark://127.0.0.1:{stack.ports['spark-master']}", tiny_raw, lake_root, env, tmp_path)
        apps = stack.spark_state()["completedapps"]
        assert [a["state"] for a in apps] == ["FINISHED"], apps
        for name in spark_only[1:]:  # an executor of the build ran under each worker
            assert list((stack.home / "spark" / name).glob("app-*/*/stderr")), name
    finally:
        stack.down()
    _assert_same_lake(clean_build.lake, lake_root)
