"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError

# mkstemp creates 0600 files; written files should get the usual mode (0666 less the umask).
_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK


def _disk_error(path: Path, exc: OSError) -> RRError:
    if exc.errno == errno.ENOSPC:
        why = "no space left on the device: free some space"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied: choose a folder you can write to"
    else:
        why = f"{exc.strerror or exc}"
    return RRError(f"could not write {path}: {why}, then rerun the same command")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to path through a temp file in the same folder and a rename."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise _disk_error(path, exc) from exc
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: Path, text: str) -> None:
    """Write text (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write an object as indented JSON atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    """Write rows as JSON lines atomically."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path, check: Callable[[Any], str | None] | None = None) -> list[dict]:
    """Read a JSON-lines file; a clear error names the bad line (`check`: what is wrong with a
    row, None when nothing is)."""
    rows, n = [], 0
    fix = "restore it or rerun the command that wrote it"
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise RRError(f"{path}:{n} is not valid JSON ({exc.msg}): {fix}") from None
                problem = check(row) if check else None
                if problem:
                    raise RRError(f"{path}:{n} {problem}: {fix}")
                rows.append(row)
    except UnicodeDecodeError:
        raise RRError(f"{path}:{n + 1} is not UTF-8 text: {fix}") from None
    return rows


def new_folder(path: Path | str, option: str = "--out") -> Path:
    """A folder the user names for rr to create: absent or empty, not a file or a link (a
    one-line error otherwise: rr never replaces a folder it did not make)."""
    path = Path(path).expanduser()
    if path.is_symlink():
        raise RRError(f"{path} is a symbolic link: give {option} a plain folder path")
    if path.exists() and not path.is_dir():
        raise RRError(f"{path} is a file, not a folder: choose a new {option} path")
    if path.is_dir() and any(path.iterdir()):
        raise RRError(f"{path} exists and is not empty: choose a new {option} path")
    return path


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it is renamed to `final`, else removed."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        tmp.chmod(0o777 & ~_UMASK)
    except OSError as exc:
        raise _disk_error(final, exc) from exc
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except OSError as exc:
        raise _disk_error(final, exc) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
