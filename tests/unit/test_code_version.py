"""The code version keys checkpoints and training reuse: it must follow the source, with or without git."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = "from nightrec import registry; print(registry.code_version(), registry.code_label())"


def _versions(site: Path) -> tuple[str, str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=site, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    version, label = out.stdout.split()
    return version, label


def test_an_installed_copy_without_git_changes_version_when_its_source_changes(tmp_path):
    site = tmp_path / "site"
    for package in ("nightrec", "schemas", "flows", "tasks"):
        shutil.copytree(ROOT / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    before, label = _versions(site)
    assert before.startswith("src-") and label == before, "no .git: the label is the hash alone"
    (site / "nightrec" / "scoring" / "rules.py").write_text(
        (site / "nightrec" / "scoring" / "rules.py").read_text() + "\n# a deployed fix\n"
    )
    after, _ = _versions(site)
    assert after != before
    (site / "NOTES.txt").write_text("not source")  # files outside the packages' Python source do not count
    assert _versions(site)[0] == after
