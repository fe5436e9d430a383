"""The run lock names its holder even to a process that comes between the lock and the name."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from reveal_release.errors import RRError
from reveal_release.run_lock import LOCK_NAME, lock_run, unlock_run

# A real second process that takes the lock, waits, and only then writes its details, as a
# holder does in the instant between flock(2) and its write.
HOLDER = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
who = {"pid": os.getpid(), "host": "h", "command": "rr x", "since": "t"}
os.write(fd, json.dumps(who).encode())
time.sleep(5)
"""


def _hold(run: Path, delay: float) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run / LOCK_NAME), str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_refusal_waits_for_the_holder_to_name_itself(tmp_path):
    proc = _hold(tmp_path, 0.3)
    try:
        with pytest.raises(RRError, match=f"in use by pid {proc.pid} on h"):
            lock_run(tmp_path)
    finally:
        proc.kill()
        proc.wait()


def test_a_holder_that_never_names_itself_is_refused_in_bounded_time(tmp_path):
    proc = _hold(tmp_path, 60)
    try:
        start = time.monotonic()
        with pytest.raises(RRError, match=r"in use by pid \? on \?"):
            lock_run(tmp_path)
        assert time.monotonic() - start < 10
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holders_lock_is_taken_over(tmp_path):
    proc = _hold(tmp_path, 0)
    time.sleep(0.2)
    proc.kill()
    proc.wait()
    note = lock_run(tmp_path)
    try:
        assert note is not None and f"pid {proc.pid}" in note
    finally:
        unlock_run(tmp_path)
