"""Which device a command runs on: `--device auto|cpu|cuda|cuda:N`, checked before any work."""

from __future__ import annotations

import os
import re

from reveal_release.errors import RRError

DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
FORMS = "auto, cpu, cuda or cuda:N"


def check_device_name(device: str) -> str:
    """The device name in its one spelling; an RRError for a name rr does not take."""
    name = device.strip().lower()
    if not DEVICE_NAME.match(name):
        raise RRError(f"unknown device '{device}': use {FORMS} (e.g. --device cuda:1)")
    return name


def pick_device(device: str = "auto") -> str:
    """'auto': CUDA when torch sees a GPU, else the CPU. 'cuda' and 'cuda:N' must name a GPU
    torch sees here. Under a launcher of several processes 'auto' and 'cuda' are each
    process's own GPU (cuda:LOCAL_RANK)."""
    import torch

    from reveal_release.parallel import launched_world, local_rank

    name = check_device_name(device)
    several = launched_world() > 1 and os.environ.get("ACCELERATE_USE_CPU") != "true"
    if name in ("auto", "cuda") and several and torch.cuda.is_available():
        name = f"cuda:{local_rank()}"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "the CPU only"
        raise RRError(
            f"--device {device}: torch sees no CUDA GPU here (torch {torch.__version__}, built "
            f"for {build}): use --device cpu, or install a CUDA build of torch on a GPU machine"
        )
    count = torch.cuda.device_count()
    index = int(name.split(":")[1]) if ":" in name else 0
    if index >= count:
        raise RRError(
            f"--device {device}: torch sees {count} GPU(s) here, cuda:0 to cuda:{count - 1}"
        )
    return name
