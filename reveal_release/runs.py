"""The run directory: a run.json manifest, per-stage status, and resume after a kill."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from reveal_release.atomic import (
    atomic_write_json,
    atomic_write_jsonl,
    atomic_write_text,
    read_jsonl,
)
from reveal_release.errors import RRError
from reveal_release.run_files import MEASURED, ROUND_METRICS
from reveal_release.run_lock import LOCK_NAME, lock_run
from reveal_release.sample_rows import MAX_SET_BYTES, sample_problem
from reveal_release.schema import read_json as read_checked_json

MANIFEST = "run.json"
MANIFEST_FORMAT = 1
FORGET_SET = "reveal/forget.jsonl"
RETAIN_SET = "reveal/retain.jsonl"
MODEL_DIR = "model"
MODEL_MARKER = "model/rr-model.json"
TRACKED_PACKAGES = ("reveal-release", "torch", "transformers", "peft", "accelerate", "vllm")


def round_dir(k: int) -> str:
    """The run-relative folder of round k."""
    return f"round-{k}"


def relevant(rows: list[dict], threshold: float, *, best_first: bool = False) -> list[dict]:
    """The rows whose judged relevance reaches the threshold (most relevant first if asked)."""
    out = [r for r in rows if r.get("relevance", 0.0) >= threshold]
    if best_first:
        out.sort(key=lambda r: -float(r.get("relevance", 0.0)))
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    """Versions of the packages a run's results depend on (absent ones left out)."""
    out = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@dataclass
class Stage:
    """A handle on one stage while it runs; `info` is saved into the manifest at the end."""

    name: str
    run: RunDir
    info: dict[str, Any]
    done: bool


class RunDir:
    """A run folder: DIR/run.json plus each stage's files, written atomically."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        self.root = Path(root)
        self.manifest = manifest

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, root: Path | str, identity: dict[str, Any] | None = None) -> RunDir:
        """Open or create a run; `identity` (model, target...) must match an existing run (a
        command working in it claims the folder first: claim)."""
        root = Path(root).expanduser()
        _check_writable(root)
        path = root / MANIFEST
        if path.exists():
            manifest = _read_manifest(path)
            old = manifest.get("identity", {})
            clash = {
                k: (old[k], v) for k, v in (identity or {}).items() if k in old and old[k] != v
            }
            if clash:
                what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in clash.items())
                raise RRError(
                    f"{root} already holds a different run ({what}): "
                    "pick a new --run folder or delete that one"
                )
            manifest.setdefault("identity", {}).update(identity or {})
        else:
            if root.exists() and any(p.name not in (".gitkeep", LOCK_NAME) for p in root.iterdir()):
                raise RRError(
                    f"{root} is not empty and has no {MANIFEST}: pick a new or empty --run folder"
                )
            manifest = {
                "format": MANIFEST_FORMAT,
                "created": _now(),
                "identity": dict(identity or {}),
                "config": {},
                "versions": package_versions(),
                "stages": {},
            }
        run = cls(root, manifest)
        run.save()
        return run

    @classmethod
    def load(cls, root: Path | str, lock: bool = False) -> RunDir:
        """Open an existing run (`lock`: hold its lock for this process, as a command working
        in it does); a clear error when there is none."""
        root = Path(root).expanduser()
        path = root / MANIFEST
        if not path.is_file():
            raise RRError(f"{root} is not a run folder (no {MANIFEST}): run `rr reveal` first")
        if lock:
            _lock(root)
        return cls(root, _read_manifest(path))

    # -- manifest --------------------------------------------------------------------
    def save(self) -> None:
        """Write the manifest atomically."""
        self.manifest["updated"] = _now()
        atomic_write_json(self.root / MANIFEST, self.manifest)

    def set(self, key: str, value: Any) -> None:
        """Set a top-level manifest field (config, seed, model...) and save."""
        self.manifest[key] = value
        self.save()

    def status(self, stage: str) -> str:
        """'pending', 'running', 'done' or 'failed'."""
        return self.manifest["stages"].get(stage, {}).get("status", "pending")

    def is_done(self, stage: str) -> bool:
        """Whether a stage finished; a later run with the same command skips it."""
        return self.status(stage) == "done"

    def stage_info(self, stage: str) -> dict[str, Any]:
        """What a stage recorded when it finished (empty if it has not)."""
        return self.manifest["stages"].get(stage, {}).get("info", {})

    def reopen(self, stage: str) -> None:
        """Mark a finished stage pending again (it keeps its files), e.g. to add rounds."""
        entry = self.manifest["stages"].get(stage)
        if entry:
            entry["status"] = "pending"
            self.save()

    @contextmanager
    def stage(self, name: str, config: dict[str, Any] | None = None) -> Iterator[Stage]:
        """Run a stage once: skipped (done=True) if finished, else marked running then done.

        A stage that finished with another config is not silently reused: that is an error.
        An exception marks the stage failed and keeps its files, so a rerun resumes.
        """
        entry = self.manifest["stages"].get(name, {})
        if entry.get("status") == "done":
            if config is not None and entry.get("config") not in (None, config):
                raise RRError(
                    f"stage '{name}' in {self.root} finished with other settings "
                    f"({_diff(entry['config'], config)}): use a new --run folder"
                )
            yield Stage(name, self, dict(entry.get("info", {})), done=True)
            return
        entry = {
            "status": "running",
            "started": entry.get("started", _now()),
            "attempts": entry.get("attempts", 0) + 1,
            "config": config,
        }
        self.manifest["stages"][name] = entry
        self.save()
        handle = Stage(name, self, {}, done=False)
        try:
            yield handle
        except BaseException as exc:
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
            entry["info"] = handle.info
            try:
                self.save()
            except RRError:
                pass  # the disk is what failed: the original error says more
            raise
        entry.update(status="done", finished=_now(), info=handle.info)
        entry.pop("error", None)
        self.save()

    # -- layout ----------------------------------------------------------------------
    def reveal_config(self, also: str = "") -> dict[str, Any]:
        """The finished reveal stage's settings (model, target...), or a one-line error."""
        config = self.manifest["stages"].get("reveal", {}).get("config") or {}
        if not self.is_done("reveal") or not config:
            raise RRError(
                f"{self.root} has no finished reveal stage: run `rr reveal --run {self.root} "
                f"--target ...` first{also}"
            )
        return config

    def check_model(self, fingerprint: str) -> None:
        """A one-line error when the run's model is not the one `rr reveal` used."""
        if fingerprint != self.manifest["identity"].get("model"):
            model = self.manifest["stages"].get("reveal", {}).get("config", {}).get("model")
            raise RRError(
                f"the model '{model}' changed since `rr reveal` ran in {self.root} "
                "(its fingerprint differs): restore it or start a new run"
            )

    def forget_set(self) -> list[dict]:
        """The first reveal's forget samples."""
        return self.read_samples(FORGET_SET)

    def retain_set(self) -> list[dict]:
        """The reveal's retain samples (empty when it wrote none)."""
        return self.read_samples(RETAIN_SET) if self.path(RETAIN_SET).exists() else []

    def rounds(self) -> list[int]:
        """The numbers of the round folders present, from 1 up to the first gap."""
        out, k = [], 1
        while self.path(round_dir(k)).exists():
            out.append(k)
            k += 1
        return out

    def round_metrics(self, k: int) -> dict[str, Any] | None:
        """Round k's metrics.json (None before it was measured)."""
        return self.read_json(f"{round_dir(k)}/metrics.json", schema=ROUND_METRICS)

    def base_metrics(self) -> dict[str, Any] | None:
        """The base model's figures as the release measured them (None before)."""
        return self.read_json("release/base-metrics.json", schema=MEASURED)

    def kept_rounds(self) -> list[int]:
        """The finished rounds whose module is part of the released model (not rolled back)."""
        return [
            k
            for k in self.rounds()
            if self.is_done(round_dir(k))
            and self.path(round_dir(k), "adapter").exists()
            and not self.stage_info(round_dir(k)).get("rolled_back")
        ]

    def has_released_model(self) -> bool:
        """Whether DIR/model holds a model written by `rr release`."""
        return self.path(MODEL_MARKER).exists()

    # -- files -----------------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        """A path inside the run folder."""
        return self.root.joinpath(*parts)

    def write_json(self, rel: str, obj: Any) -> Path:
        """Write JSON inside the run, atomically."""
        atomic_write_json(self.path(rel), obj)
        return self.path(rel)

    def write_jsonl(self, rel: str, rows: list[dict]) -> Path:
        """Write JSON lines inside the run, atomically."""
        atomic_write_jsonl(self.path(rel), rows)
        return self.path(rel)

    def write_text(self, rel: str, text: str) -> Path:
        """Write text inside the run, atomically."""
        atomic_write_text(self.path(rel), text)
        return self.path(rel)

    def read_jsonl(self, rel: str) -> list[dict]:
        """Read JSON lines from the run."""
        return read_jsonl(self.path(rel))

    def read_samples(self, rel: str) -> list[dict]:
        """Read a sample set (forget or retain answers), each line checked against its schema."""
        path = self.path(rel)
        if path.is_file() and path.stat().st_size > MAX_SET_BYTES:
            raise RRError(
                f"{path} is over {MAX_SET_BYTES // 2**20} MB: it is not a set rr wrote; rerun "
                "`rr reveal` into a new --run folder"
            )
        return read_jsonl(path, sample_problem)

    def read_json(self, rel: str, default: Any = None, schema: Any = dict) -> Any:
        """Read JSON from the run, checked against `schema` (run_files), or `default` when the
        file is missing; a damaged file is one error naming it and what to do."""
        path = self.path(rel)
        if not path.exists():
            return default
        top = rel.split("/")[0]
        fix = (
            f"delete {self.path(top)} and rerun to rebuild it"
            if top.startswith("round-") or top in ("release", "model")
            else "rerun the command that wrote it"
        )
        return read_checked_json(path, schema, fix)


def claim(root: Path | str) -> None:
    """Create the run folder if needed and lock it for this process (before slow set-up, so
    that a second command on it is refused at once)."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise RRError(f"{root} is a file, not a folder: choose a new --run folder")
    if root.is_dir() and not (root / MANIFEST).exists():
        other = sorted(p.name for p in root.iterdir() if p.name != LOCK_NAME)
        if other:
            raise RRError(
                f"{root} holds other files ({', '.join(other[:3])}) and is not a run folder "
                "(no run.json): choose a new or empty --run folder"
            )
    _check_writable(root)
    _lock(root)


def _lock(root: Path) -> None:
    """This process's lock on the run folder (run_lock), saying so when it took a stale one;
    then a run folder with a symbolic link in it is refused (writes must not leave it)."""
    note = lock_run(root)
    if note:
        from reveal_release.console import say

        say(note)
    for folder, dirs, files in os.walk(root):
        for name in (*dirs, *files):
            if os.path.islink(os.path.join(folder, name)):
                raise RRError(
                    f"{os.path.join(folder, name)} is a symbolic link: rr does not follow links "
                    "out of a run folder; replace it with what it points to, or use a new --run"
                )


def _check_writable(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".rr-write-check.", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RRError(
            f"cannot write to run folder {root} ({exc.strerror or exc}): "
            "choose a --run folder you can write to"
        ) from None


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RRError(
            f"{path} is unreadable or corrupt ({type(exc).__name__}): "
            "restore it or start a new --run folder"
        ) from None
    shaped = isinstance(manifest, dict) and isinstance(manifest.get("stages"), dict)
    shaped = (
        shaped
        and all(isinstance(manifest.get(k, {}), dict) for k in ("identity", "config", "model"))
        and all(isinstance(v, dict) for v in manifest["stages"].values())
    )
    if not shaped or manifest.get("format") != MANIFEST_FORMAT:
        raise RRError(
            f"{path} is not a reveal-release manifest of format {MANIFEST_FORMAT}: "
            "restore it or start a new --run folder"
        )
    return _upgrade(manifest)


def _upgrade(manifest: dict[str, Any]) -> dict[str, Any]:
    """Rename the stage settings that earlier versions wrote under other names."""
    stages = manifest["stages"]
    reveal = (stages.get("reveal") or {}).get("config") or {}
    if "alpha" in reveal:  # the reward's diversity weight, once called alpha
        reveal["diversity_weight"] = reveal.pop("alpha")
    release = (stages.get("release") or {}).get("config") or {}
    if "extra" in release:  # the R2F decoder path, once carried in an `extra` dict
        release["decoder"] = (release.pop("extra") or {}).get("decoder", "")
    return manifest


def _diff(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new))
    parts = [
        f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)
    ]
    return "; ".join(parts[:3])
