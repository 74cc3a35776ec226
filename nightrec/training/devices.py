"""Where a training runs: the device, its precision, the CPU threads and the seed.

CPU runs are fp32 and seeded (same seed, same losses); CUDA runs use bf16 autocast (needs no grad scaler).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch

from nightrec.settings import TrainSettings

if TYPE_CHECKING:
    from nightrec.training.process_group import World


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``/``cuda`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; nothing on CPU, where the gathers and the optimizer dominate (ECOSYSTEM 6)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def prepare(settings: TrainSettings, world: World) -> torch.device:
    """Seed, set the CPU threads (the cores shared by this machine's training processes), pick the device."""
    torch.set_num_threads(max((os.cpu_count() or 1) // world.local_size, 1))
    torch.manual_seed(settings.seed)
    return world.device if world.device is not None else select_device(settings.device)
