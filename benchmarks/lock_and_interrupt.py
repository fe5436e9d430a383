"""Two processes on one run folder, `kill -9` and Ctrl-C, on the embedded model, as a user meets
them; every command a real `rr` process.

    python benchmarks/lock_and_interrupt.py --out /tmp/lock-demo

Prints, in order: how long `rr --help` takes; a `rr reveal` interrupted by SIGINT to its process
group (what Ctrl-C in a terminal sends) and its rerun; two `rr release` on one run, the second
started while the first holds the lock (its wall time and its line); the holder killed with
SIGKILL and the rerun taking the stale lock over; that rerun interrupted by SIGINT once it has
saved training steps, and the rerun after it; a `rr eval` interrupted once it has saved figures,
and its rerun (figures read back). Small settings keep it to a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

RR = [sys.executable, "-m", "reveal_release"]
RELEASE = ["--rounds", "1", "--steps", "12", "--checkpoint-every", "2", "--probes", "5",
           "--qa", "8", "--reveal-budget", "12"]  # fmt: skip
EVAL = ["--probes", "5", "--qa", "8", "--attacks", "relearn,quant-int4", "--no-baseline"]


def start(args: list[str]) -> subprocess.Popen:
    """`rr ARGS` in its own process group, as a terminal starts it."""
    return subprocess.Popen(
        [*RR, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"rr exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        time.sleep(0.02)


def last_lines(text: str, n: int = 2) -> str:
    return " | ".join(x.strip() for x in text.strip().splitlines()[-n:])


def run(args: list[str]) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([*RR, *args], capture_output=True, text=True)
    return out.returncode, time.perf_counter() - t0, out.stderr


def interrupt(args: list[str], ready: Callable[[], bool], what: str) -> None:
    """Start, SIGINT the group once `ready`, print the message; rerun and print its result."""
    proc = start(args)
    wait_for(proc, ready, what)
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=300)[1]
    print(f"  SIGINT after {what}: exit {proc.returncode}: {last_lines(err, 1)}")
    code, took, err = run(args)
    print(f"  rerun: exit {code} in {took:.1f} s: {last_lines(err, 1)[:160]}")


def holder(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / ".rr-lock").read_text() or "{}")
    except (OSError, ValueError):
        return {}


def figures(report: Path) -> int:
    try:
        return len(json.loads((report / "cache.json").read_text()))
    except (OSError, ValueError):
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="A new folder for the run.")
    args = ap.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: give a new folder")
    d = args.out / "run"

    code, took, _ = run(["--help"])
    print(f"rr --help: exit {code} in {took:.2f} s")

    print("rr reveal --target code (budget 24):")
    reveal = ["reveal", "--target", "code", "--run", str(d), "--budget", "24",
              "--retain-budget", "12"]  # fmt: skip
    interrupt(reveal, (d / "reveal" / "state" / "forget.safetensors").exists,
              "its first saved search step")  # fmt: skip

    print("two rr release on one run:")
    release = ["release", "--run", str(d), *RELEASE]
    first = start(release)
    wait_for(first, lambda: holder(d).get("pid") == first.pid, "it took the lock")
    code, took, err = run(release)
    print(f"  second: exit {code} in {took:.2f} s (interpreter start included): {err.strip()}")
    first.send_signal(signal.SIGKILL)
    first.wait()
    print(f"  first killed with SIGKILL (pid {first.pid})")
    again = start(release)
    state = d / "round-1" / "train-state.json"
    wait_for(again, state.exists, "a saved training step")
    os.killpg(again.pid, signal.SIGINT)
    err = again.communicate(timeout=300)[1]
    took_over = [x.strip() for x in err.splitlines() if "took over" in x]
    print(f"  rerun: {took_over[0] if took_over else 'took over NOTHING'}")
    print(f"  that rerun, SIGINT after a saved training step: exit {again.returncode}: "
          f"{last_lines(err, 1)}")  # fmt: skip
    code, took, err = run(release)
    print(f"  rerun: exit {code} in {took:.1f} s: {last_lines(err, 1)[:160]}")

    print("rr eval:")
    report = d / "report"
    interrupt(["eval", "--run", str(d), *EVAL], lambda: figures(report) >= 2,
              "two saved figures")  # fmt: skip
    m = json.loads((report / "metrics.json").read_text())
    print(f"  figures read back {m['cache']['hits']}, computed {m['cache']['computed']}")
    shutil.rmtree(args.out / "run" / "model", ignore_errors=True)  # the 500 MB merged model


if __name__ == "__main__":
    main()
