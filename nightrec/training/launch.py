"""Launch a stage's training as several processes with torchrun (``train.processes`` > 1).

The stage keeps its contract: it calls :func:`nightrec.training.reuse.train_or_reuse`, which, on a miss, comes
here. torchrun (``python -m torch.distributed.run --standalone``) starts ``train.processes`` processes of
:mod:`nightrec.training.distributed` on this machine, each given the stage's settings (its run parameters
applied) in a file; they train under DistributedDataParallel and rank 0 registers the version under the
same reuse key and tags a one-process training would have. Their output is this process's log, a line each,
so the epochs show in the stage's run log.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from collections import deque
from datetime import date
from pathlib import Path

from nightrec.errors import NightrecError
from nightrec.settings import Settings
from nightrec.training import distributed
from schemas.results import ModelTrained

log = logging.getLogger(__name__)
_MODEL_ARG = {name: arg for arg, name in distributed.MODEL_NAMES.items()}  # its --model choices


class LaunchError(NightrecError):
    """The torchrun processes of a training failed; the message holds the end of their output."""


def command(
    settings: Settings, ds: date, model_name: str, tags: dict[str, str], settings_file: Path, out: Path
) -> list[str]:
    """The torchrun command line that trains ``model_name`` in ``train.processes`` processes."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(settings.train.processes),
        "-m", "nightrec.training.distributed",
        "--date", ds.isoformat(), "--model", _MODEL_ARG[model_name],
        "--settings", str(settings_file), "--out", str(out), "--reuse",
    ]  # fmt: skip
    for key, value in sorted(tags.items()):
        cmd += ["--tag", f"{key}={value}"]
    return cmd


def torchrun(settings: Settings, ds: date, model_name: str, tags: dict[str, str]) -> ModelTrained:
    """Train ``model_name`` for ``ds`` in ``train.processes`` processes; rank 0's registered version.

    Raises:
        LaunchError: a process failed (or torchrun could not start them), with the last lines they wrote.
    """
    with tempfile.TemporaryDirectory(prefix="nightrec-torchrun-") as tmp:
        settings_file, out = Path(tmp) / "settings.json", Path(tmp) / "result.json"
        settings_file.write_text(settings.model_dump_json())
        cmd = command(settings, ds, model_name, tags, settings_file, out)
        log.info("training %s in %d processes: %s", model_name, settings.train.processes, " ".join(cmd[2:8]))
        tail: deque[str] = deque(maxlen=40)
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        ) as proc:
            for line in proc.stdout:  # type: ignore[union-attr]
                tail.append(line.rstrip())
                log.info("%s", line.rstrip())
        if proc.returncode != 0 or not out.exists():
            raise LaunchError(
                f"torchrun training of {model_name} for {ds} failed (exit {proc.returncode}) in "
                f"{settings.train.processes} processes; its last lines:\n" + "\n".join(tail)
            )
        return ModelTrained(**json.loads(out.read_text())[_MODEL_ARG[model_name]])
