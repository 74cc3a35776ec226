"""`memory_gib` is a bound the kernel holds the night to: a whole night in a memory cgroup of that size publishes.

The night runs as users run it (`nightrec run --data`) in a cgroup whose limit is the setting: every process of
it (the CLI, Prefect's local server, the Spark driver JVM, MLflow) counts, and past the limit the kernel kills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from nightrec.data import synthetic
from tests.e2e.memory_cgroup import memory_cgroup

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
MEMORY_GIB = 2.5


def test_a_night_within_its_memory_setting_publishes_under_a_cgroup_of_that_size(tmp_path):
    raw = tmp_path / "raw"
    synthetic.generate(3_000, 800, 45, raw, seed=3, events_per_user=60.0)
    env = {
        **os.environ,
        "NIGHTREC_HOME": str(tmp_path / "home"),
        "NIGHTREC_MEMORY_GIB": str(MEMORY_GIB),
        "NIGHTREC_TRAIN__RETRIEVAL_EPOCHS": "2",
        "NIGHTREC_TRAIN__RANKING_EPOCHS": "2",
        "NIGHTREC_FEATURES__HOLDOUT_DAYS": "5",
        "NIGHTREC_FEATURES__VALID_DAYS": "5",
    }
    with ExitStack() as stack:
        try:
            cg = stack.enter_context(memory_cgroup(int(MEMORY_GIB * 2**30)))
        except OSError as e:  # not root, or no memory controller: the kernel cannot hold the bound here
            pytest.skip(f"cannot make a memory cgroup on this machine: {e}")
        proc = subprocess.run(
            [sys.executable, "-m", "nightrec.cli", "run", "--data", str(raw)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=840,
            preexec_fn=cg.join,
        )
        peak, kills = cg.peak_bytes(), cg.oom_kills()
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert kills == 0 and 0 < peak <= MEMORY_GIB * 2**30
    last = json.loads((tmp_path / "home" / "last_run.json").read_text())
    assert last["status"] == "completed" and last["publish"]["live"]
    print(f"peak {peak / 2**30:.2f} GiB of {MEMORY_GIB} GiB")
