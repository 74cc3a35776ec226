"""build_features on real separate executor JVMs (``local-cluster``) writes what local mode writes.

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
from tests.unit.features import _lake_compare as lc
from tests.unit.features.conftest import CFG, RUN_DATE, clean_build  # noqa: F401  (the shared clean build)

pytestmark = [pytest.mark.slow, pytest.mark.spark]

_CLUSTER_RUN = """
import sys
import time
from datetime import date
from nightrec.features import build
from nightrec.io.spark import get_spark
from nightrec.settings import FeatureSettings, SparkSettings
raw, lake_root, ds, work = sys.argv[1:5]
conf = {{"spark.worker.dir": work, "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
        "spark.executor.cores": "1"}}
spark = get_spark(SparkSettings(master="local-cluster[2,1,1024]", driver_memory="1g", shuffle_partitions=2,
                                max_result_size="32m", extra_conf=conf))
# Two executor processes besides the driver, or this test proves nothing about a cluster (they register
# asynchronously after the session starts).
deadline = time.monotonic() + 90
while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() < 3:
    assert time.monotonic() < deadline, "executors did not register"
    time.sleep(0.5)
summary = build.build_features(spark, raw, lake_root, date.fromisoformat(ds),
                               FeatureSettings(holdout_days={holdout}, valid_days={valid}))
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


def test_local_cluster_build_equals_local_mode(tiny_raw, clean_build, tmp_path):  # noqa: F811
    lake_root = str(tmp_path / "lake")
    env, work = cluster_env(tmp_path)
    code = textwrap.dedent(_CLUSTER_RUN.format(holdout=CFG.holdout_days, valid=CFG.valid_days))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tiny_raw), lake_root, RUN_DATE.isoformat(), str(work)],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WRITTEN " + ",".join(["vocab", "interactions", "item_features", "user_features"]) in proc.stdout
    assert any(work.iterdir()), "executors should have used the given work dir"
    for table in (t.name for t in build.OUTPUTS):
        lc.assert_same_frames(
            lc.read_frame(clean_build.lake, table, RUN_DATE), lc.read_frame(lake_root, table, RUN_DATE), table
        )
