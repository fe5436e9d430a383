"""One process at a time in a run folder: an advisory lock held while a command works in it.

The lock is `DIR/.rr-lock`, locked with flock(2) for the life of the process, so the kernel
releases it when the process ends in any way (a kill -9 included): a lock file left behind is
recognised as stale by being lockable again, and the next command takes it over. The file
names its holder (pid, command, host, since when) for the error a second process gets.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError

LOCK_NAME = ".rr-lock"

_held: dict[Path, int] = {}  # run folder -> the descriptor this process locked it with


def _holder() -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "command": shlex.join(["rr", *sys.argv[1:]]),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }


def _describe(holder: dict[str, Any]) -> str:
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} "
        f"({holder.get('command', '?')}, since {holder.get('since', '?')})"
    )


def _read_holder(fd: int) -> dict[str, Any]:
    """The holder the lock file names ({} when it names none readable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096) or b"{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _wait_for_holder(fd: int, seconds: float = 2.0) -> dict[str, Any]:
    """The holder of a lock just found taken: it locks first and names itself next, so a reader
    that comes between the two waits (up to `seconds`) for the name to be written."""
    deadline = time.monotonic() + seconds
    holder = _read_holder(fd)
    while not holder.get("pid") and time.monotonic() < deadline:
        time.sleep(0.02)
        holder = _read_holder(fd)
    return holder


def lock_run(root: Path) -> str | None:
    """Lock the run folder `root` for this process (again: no-op); a one-line RRError naming the
    holder when another process has it. Returns a note when a stale lock was taken over."""
    root = Path(root).resolve()
    if root in _held:
        return None
    path = root / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise RRError(
            f"cannot lock run folder {root} ({exc.strerror or exc}): "
            f"remove {path} if it is not a plain file, or choose another --run folder"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _wait_for_holder(fd)
        os.close(fd)
        raise RRError(
            f"run folder {root} is in use by {_describe(holder)}: wait for it to finish, "
            "or stop it (a killed process's lock is taken over by the next command)"
        ) from None
    stale = _read_holder(fd)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, json.dumps(_holder()).encode())
    os.fsync(fd)
    _held[root] = fd
    atexit.register(unlock_run, root)  # a clean exit leaves the file naming no holder
    if stale.get("pid") and stale.get("pid") != os.getpid():
        return f"took over the lock of {_describe(stale)}, which no longer runs"
    return None


def unlock_run(root: Path) -> None:
    """Release this process's lock on `root` (the file stays, lockable again)."""
    fd = _held.pop(Path(root).resolve(), None)
    if fd is not None:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
