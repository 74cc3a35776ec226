"""Precompute on Spark executors (``scoring.engine = "spark"``, local-cluster) writes what the local path writes.

The same random-weight models score the tiny night's users in process and on two executor processes (models and
catalog broadcast, users and their seen items as Arrow batches through mapInArrow); the lists must agree.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.dataset as pads
import pytest
import torch

from nightrec.models.configs import DeepFMConfig, TwoTowerConfig
from nightrec.models.deepfm import DeepFM
from nightrec.models.two_tower import TwoTower
from nightrec.scoring.precompute import precompute
from nightrec.settings import Settings
from nightrec.training.datasets import vocab_sizes
from tests.cluster.test_features_cluster import cluster_env
from tests.conftest import TEST_SPARK
from tests.unit.features.conftest import RUN_DATE, clean_build, lake_copy  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.spark]

_CLUSTER_RUN = """
import json, sys, time
from datetime import date
import torch
from nightrec.io.spark import get_spark
from nightrec.scoring.precompute import precompute
from nightrec.settings import Settings, SparkSettings
lake_root, models, ds, work = sys.argv[1:5]
conf = {"spark.worker.dir": work, "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
        "spark.executor.cores": "1"}
spark_cfg = SparkSettings(master="local-cluster[2,1,1024]", driver_memory="1g", shuffle_partitions=2,
                          max_result_size="32m", extra_conf=conf)
spark = get_spark(spark_cfg)
deadline = time.monotonic() + 90
while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() < 3:
    assert time.monotonic() < deadline, "executors did not register"
    time.sleep(0.5)
retrieval, ranking = torch.load(models, weights_only=False)
settings = Settings(home=lake_root + "-home", lake=lake_root, spark=spark_cfg,
                    scoring={"engine": "spark", "user_chunk_size": 64, "max_per_category": 4,
                             "segment_fallback_min_users": 5})
summary = precompute(settings, date.fromisoformat(ds), retrieval, ranking, fingerprint="fp")
print("SUMMARY", json.dumps(summary.__dict__))
spark.stop()
"""


def _recs(lake_root: str):
    path = Path(lake_root) / "recs" / f"ds={RUN_DATE.isoformat()}"
    return pads.dataset(str(path), format="parquet").to_table().to_pandas().sort_values(["user_id", "rank"])


def test_spark_engine_on_a_local_cluster_writes_the_local_paths_lists(clean_build, tmp_path):  # noqa: F811
    local_lake = lake_copy(clean_build.lake, tmp_path / "local")
    spark_lake = lake_copy(clean_build.lake, tmp_path / "spark")
    torch.manual_seed(0)
    sizes = vocab_sizes(local_lake, RUN_DATE)
    models = (
        TwoTower(TwoTowerConfig.from_vocab(sizes, dim=16, hidden=(32,))),
        DeepFM(DeepFMConfig.from_vocab(sizes, embed_dim=4, hidden=(16,))),
    )
    models_file = tmp_path / "models.pt"
    torch.save(models, models_file)
    settings = Settings(
        home=tmp_path / "home",
        lake=local_lake,
        spark=TEST_SPARK,
        scoring={"user_chunk_size": 64, "max_per_category": 4, "segment_fallback_min_users": 5},
    )
    local = precompute(settings, RUN_DATE, *models, fingerprint="fp")

    env, work = cluster_env(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_CLUSTER_RUN),
            spark_lake,
            str(models_file),
            RUN_DATE.isoformat(),
            str(work),
        ],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("SUMMARY ")]
    assert summary, proc.stdout[-2000:]
    import json

    remote = json.loads(summary[0].removeprefix("SUMMARY "))
    for key in ("users", "rows", "model_users", "fallback_users", "short_lists"):
        assert remote[key] == getattr(local, key), key
    assert local.fallback_users > 0 and local.model_users > 0
    a, b = _recs(local_lake), _recs(spark_lake)
    assert list(a["user_id"]) == list(b["user_id"]) and list(a["rank"]) == list(b["rank"])
    assert list(a["source"]) == list(b["source"])
    same = (a["item_id"].to_numpy() == b["item_id"].to_numpy()).mean()
    assert same > 0.99, f"only {same:.3f} of the (user, rank) slots agree"  # batch shapes may flip exact ties
    assert (Path(spark_lake) / "recs" / f"ds={RUN_DATE.isoformat()}" / "_MARKER.json").exists()
