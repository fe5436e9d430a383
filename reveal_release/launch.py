"""`rr release --processes N`: start N processes through a launcher that Accelerate works
under, each running `rr release` with the same options.

On GPUs the launcher is `accelerate launch --multi_gpu`; on the CPU (Accelerate's own CPU
launcher needs MPI) it is torch.distributed.run, which `accelerate launch` itself uses for
several GPUs. The options travel in an environment variable, not on the launcher's command
line, whose parser takes `--run` for an abbreviation of its own `--run-path`. The main
process's exit code comes back through a file, so that a refusal is its one line and not
also the launcher's report of a failed child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from reveal_release.errors import RRError

ARGV_VAR = "RR_LAUNCH_ARGV"
STATUS_VAR = "RR_LAUNCH_STATUS"
ENTRY = Path(__file__).with_name("launched.py")


def launcher(n: int, gpus: int, device: str = "auto") -> list[str]:
    """The command that starts n processes of ENTRY: one per GPU when there are GPUs and the
    device is not the CPU."""
    if device.startswith("cuda:"):
        raise RRError(
            f"--processes {n} takes one GPU per process: give --device auto or cuda, not "
            f"{device} (choose the GPUs with CUDA_VISIBLE_DEVICES)"
        )
    if gpus and device != "cpu":
        if n > gpus:
            raise RRError(f"--processes {n}: torch sees {gpus} GPU(s) here; give at most {gpus}")
        return [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            f"--num_processes={n}", "--num_machines=1", "--mixed_precision=no",
            "--dynamo_backend=no", str(ENTRY),
        ]  # fmt: skip
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
        str(ENTRY),
    ]  # fmt: skip


def relaunch(n: int, argv: Sequence[str], device: str = "auto") -> int:
    """Run `rr` (argv; each process sees it was launched and runs its part) in n processes;
    the main process's exit code (the launcher's if the main process left none)."""
    import tempfile

    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cmd = launcher(n, gpus, device)
    with tempfile.TemporaryDirectory(prefix="rr-launch-") as tmp:
        status = Path(tmp) / "status"
        env = {**os.environ, ARGV_VAR: json.dumps(list(argv)), STATUS_VAR: str(status)}
        if not gpus or device == "cpu":
            env["ACCELERATE_USE_CPU"] = "true"  # gloo, even where torch sees a GPU
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or n) // n)))
        code = subprocess.call(cmd, env=env)
        if status.is_file():
            return int(status.read_text() or code)
    return code


def record_exit(code: object) -> bool:
    """In the main process of a relaunch: write its exit code for the parent; True if written
    (the process may then exit 0, so the launcher reports no failure of its own)."""
    path = os.environ.get(STATUS_VAR)
    if not path or os.environ.get("RANK", "0") != "0":
        return False
    Path(path).write_text(str(exit_code(code)))
    return True


def exit_code(code: object) -> int:
    """The process exit code a SystemExit's code stands for (None: 0; a message: 1)."""
    return code if isinstance(code, int) else (0 if code is None else 1)


def die_with_launcher() -> None:
    """Have the kernel kill this process when its launcher dies (Linux; elsewhere nothing).
    The launcher starts each process in a session of its own, so a kill of `rr` and its
    launcher would otherwise leave the processes training on, and writing the run folder."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() == 1:  # the launcher died before the line above: go with it
        os._exit(1)
