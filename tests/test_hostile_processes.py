"""Two processes on one run folder (the lock) and Ctrl-C (SIGINT to the process group), each a
real `rr` process on the tiny model: a second process is refused with the holder named, a
killed holder's lock is taken over, and an interrupted command says what it kept and resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPO, copy_run, popen_rr, refused, run_rr, snapshot, stage_status

from reveal_release.run_lock import LOCK_NAME

FAST = ["--steps", "20", "--checkpoint-every", "2", "--probes", "3", "--qa", "4",
        "--reveal-budget", "4", "--batch-size", "2"]  # fmt: skip
FAST_EVAL = ["--probes", "3", "--qa", "4", "--max-new-tokens", "8", "--relearn-steps", "2",
             "--no-baseline"]  # fmt: skip


def _holder(run: Path) -> dict:
    try:
        return json.loads((run / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _popen(args: list[str]) -> subprocess.Popen:
    """`rr ARGS` in its own process group (as a terminal runs it), stderr kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "reveal_release", *args], cwd=REPO, env=os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    deadline = time.time() + 300
    while not ready() and proc.poll() is None:
        assert time.time() < deadline, f"never reached: {what}"
        time.sleep(0.02)
    assert proc.poll() is None, f"finished before {what}: make it longer"


def test_second_release_is_refused_and_a_killed_holders_lock_is_taken_over(revealed, tmp_path):
    run = copy_run(revealed, tmp_path)
    holder = popen_rr("release", "--run", str(run), "--rounds", "1", *FAST)
    _wait_for(holder, lambda: _holder(run).get("pid") == holder.pid, "the lock")
    before = snapshot(run / "run.json", run / "reveal")
    start = time.perf_counter()
    second = run_rr("release", "--run", str(run), "--rounds", "1", *FAST)
    took = time.perf_counter() - start
    line = refused(second, "is in use by", f"pid {holder.pid}", "rr release --run")
    assert holder.poll() is None, "the holder must still run while the second is refused"
    assert snapshot(run / "reveal") == {
        p: b for p, b in before.items() if p.is_relative_to(run / "reveal")
    }  # fmt: skip
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    again = run_rr("release", "--run", str(run), "--rounds", "1", *FAST)
    assert again.returncode == 0, again.stderr
    assert f"took over the lock of pid {holder.pid}" in again.stderr
    assert stage_status(run, "round-1") == "done"
    assert _holder(run) == {}, "a clean exit leaves the lock naming no holder"
    print(f"second process refused in {took:.2f} s (interpreter start included): {line}")


def test_two_reveals_started_together_one_works_one_is_refused(tiny_folder, revealed, tmp_path):
    # Both used to exit 0, leaving the bandit state of one and the sets of the other.
    run = tmp_path / "run"
    spec = revealed.parent / "anything.toml"
    args = ["reveal", "--model", str(tiny_folder), "--target", str(spec), "--run", str(run),
            "--budget", "12", "--retain-budget", "4"]  # fmt: skip
    procs = [_popen(args), _popen(args)]
    outs = [p.communicate(timeout=600)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], (codes, outs)
    loser = next(o for p, o in zip(procs, outs, strict=True) if p.returncode == 2)
    winner = next(p for p in procs if p.returncode == 0)
    refused(subprocess.CompletedProcess(args, 2, "", loser), "is in use by", f"pid {winner.pid}")
    assert stage_status(run, "reveal") == "done"
    bandit = [json.loads(x) for x in (run / "reveal" / "bandit.jsonl").read_text().splitlines()]
    forget = [json.loads(x) for x in (run / "reveal" / "forget.jsonl").read_text().splitlines()]
    asked = {p["instruction"] for p in bandit if p["set"] == "forget"}
    assert forget and all(r["prompt"] in asked for r in forget)


def _cache_figures(out_dir: Path) -> int:
    try:
        return len(json.loads((out_dir / "cache.json").read_text()))
    except (OSError, ValueError):
        return 0


@pytest.mark.parametrize("command", ["reveal", "release", "eval"])
def test_ctrl_c_says_what_is_kept_and_the_rerun_resumes(
    command, tiny_folder, revealed, released_run, tmp_path
):
    if command == "reveal":
        run = tmp_path / "run"
        args = ["reveal", "--model", str(tiny_folder), "--target",
                str(revealed.parent / "anything.toml"), "--run", str(run), "--budget", "96",
                "--retain-budget", "4"]  # fmt: skip
        checkpoint = run / "reveal" / "state" / "forget.safetensors"
        ready = checkpoint.exists
    elif command == "release":
        run = copy_run(revealed, tmp_path)
        args = ["release", "--run", str(run), "--rounds", "1", *FAST]
        checkpoint = run / "round-1" / "train-state.json"
        ready = checkpoint.exists
    else:
        run = copy_run(released_run, tmp_path)
        args = ["eval", "--run", str(run), *FAST_EVAL]
        checkpoint = run / "report" / "cache.json"
        ready = lambda: _cache_figures(run / "report") >= 2  # noqa: E731
    proc = _popen(args)
    _wait_for(proc, ready, "a saved checkpoint")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    said = " ".join(err.split())
    assert "rr: interrupted: finished stages and saved steps are kept" in said, err
    assert f"resume with: rr {' '.join(args)}" in said, err
    assert checkpoint.exists(), "what the rerun resumes from"
    kept = _cache_figures(run / "report")
    again = run_rr(*args)
    assert again.returncode == 0, again.stderr
    assert "took over" not in again.stderr  # an interrupt exits cleanly: no stale lock
    if command == "eval":
        metrics = json.loads((run / "report" / "metrics.json").read_text())
        assert metrics["cache"]["hits"] >= kept >= 2
    else:
        assert stage_status(run, "reveal" if command == "reveal" else "round-1") == "done"
