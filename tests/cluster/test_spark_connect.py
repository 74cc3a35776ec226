"""The Spark stages through a Spark Connect server (`spark.remote`) write what local mode writes.

The server is the wheel's own (``nightrec.io.spark_connect``) on loopback. The client runs in a subprocess:
a Connect session switches the whole Python process to Connect mode, and this one holds the session
fixture's classic session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from nightrec.features import build
from nightrec.io import spark_connect
from nightrec.settings import Settings
from nightrec.validation.raw_gate import validate_raw
from tests.unit.features import _lake_compare as lc
from tests.unit.features.conftest import CFG, RUN_DATE, clean_build  # noqa: F401  (the shared clean build)

pytestmark = [pytest.mark.slow, pytest.mark.spark]

_CLIENT = """
import json
import sys
from datetime import date
from pathlib import Path
from nightrec.features import build
from nightrec.io.spark import get_spark
from nightrec.settings import FeatureSettings, Settings, SparkSettings
from nightrec.validation.raw_gate import validate_raw
url, raw, lake_root, ds, home = sys.argv[1:6]
spark = get_spark(SparkSettings(remote=url, shuffle_partitions=2))
assert type(spark).__module__ == "pyspark.sql.connect.session", type(spark)
settings = Settings(home=Path(home), spark=SparkSettings(remote=url))
report = validate_raw(spark, raw, settings, date.fromisoformat(ds))
print("RAW GATE", json.dumps({{r.suite: r.success for r in report.results}}))
summary = build.build_features(spark, raw, lake_root, date.fromisoformat(ds),
                               FeatureSettings(holdout_days={holdout}, valid_days={valid},
                                               negatives_per_positive={neg}))
print("WRITTEN", ",".join(summary.written))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    log = tmp_path_factory.mktemp("connect") / "server.log"
    with spark_connect.serving(log, master="local[2]", driver_memory="1g") as (url, _):
        yield url


def test_raw_gate_and_features_through_spark_connect_equal_local_mode(
    server,
    spark,
    tiny_raw,
    clean_build,  # noqa: F811
    tmp_path,
):
    lake_root = str(tmp_path / "lake")
    code = textwrap.dedent(
        _CLIENT.format(holdout=CFG.holdout_days, valid=CFG.valid_days, neg=CFG.negatives_per_positive)
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            server,
            str(tiny_raw),
            lake_root,
            RUN_DATE.isoformat(),
            str(tmp_path / "home"),
        ],
        env={**os.environ},
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The gate reaches the same verdict, suite by suite, as on the classic session.
    gate_line = next(line for line in proc.stdout.splitlines() if line.startswith("RAW GATE "))
    local = validate_raw(spark, tiny_raw, Settings(home=tmp_path / "home-local"), RUN_DATE)
    assert json.loads(gate_line.removeprefix("RAW GATE ")) == {r.suite: r.success for r in local.results}
    written = next(line for line in proc.stdout.splitlines() if line.startswith("WRITTEN "))
    assert set(written.removeprefix("WRITTEN ").split(",")) == {t.name for t in build.OUTPUTS}, proc.stdout
    for table in (t.name for t in build.OUTPUTS):
        lc.assert_same_frames(
            lc.read_frame(clean_build.lake, table, RUN_DATE), lc.read_frame(lake_root, table, RUN_DATE), table
        )


def test_spark_scoring_engine_refuses_a_connect_session(tmp_path):
    # It broadcasts the models through the SparkContext, which a Connect session does not have: say so when
    # the settings are read, not deep inside the precompute stage.
    with pytest.raises(ValidationError, match="scoring.engine='spark'.*spark.remote"):
        Settings(home=tmp_path, spark={"remote": "sc://127.0.0.1:15002"}, scoring={"engine": "spark"})
    assert Settings(home=tmp_path, spark={"remote": "sc://127.0.0.1:15002"}).spark.remote.startswith("sc://")
    with pytest.raises(ValidationError, match="sc://"):
        Settings(home=tmp_path, spark={"remote": "127.0.0.1:15002"})
