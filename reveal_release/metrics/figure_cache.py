"""Figures kept on disk, keyed by what they depend on: a rerun computes only what is missing."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reveal_release.atomic import atomic_write_json


def finite(obj: Any) -> Any:
    """obj with every NaN or infinity replaced by None, so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def signature(obj: Any) -> str:
    """A short stable hash of JSON-able settings."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


class NotCached(Exception):
    """Raised by a compute function whose result (a skip, say) must be retried next time."""

    def __init__(self, value: Any):
        super().__init__("not cached")
        self.value = value


class MetricCache:
    """A JSON file of key -> figures; every new entry is written at once (atomic)."""

    def __init__(self, path: Path, salt: str = ""):
        self.path = path
        self.salt = salt
        self.hits = 0
        self.misses = 0
        try:
            self.data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            self.data = {}  # a missing or torn cache only costs recomputation

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """The stored value for key, else compute it, store it and return it."""
        full = f"{key}|{self.salt}"
        if full in self.data:
            self.hits += 1
            return self.data[full]
        try:
            value = finite(compute())
        except NotCached as skip:
            return finite(skip.value)
        self.misses += 1
        self.data[full] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.data)
        return value
