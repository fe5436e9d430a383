"""The model cache: GGUF files dequantised once and kept as safetensors folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from reveal_release.atomic import atomic_dir, atomic_write_json

CACHE_FORMAT = 1
MARKER = "rr-cache.json"


def cache_root() -> Path:
    """RR_CACHE, else $XDG_CACHE_HOME/reveal-release, else ~/.cache/reveal-release."""
    if os.environ.get("RR_CACHE"):
        return Path(os.environ["RR_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reveal-release"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, memoised in the cache by (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = cache_root() / "hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    memo[key] = digest.hexdigest()
    try:
        atomic_write_json(memo_path, memo)
    except Exception:  # noqa: BLE001 - a memo we cannot write only costs a rehash next time
        pass
    return memo[key]


@dataclass(frozen=True)
class CacheEntry:
    """One dequantised model in the cache."""

    path: Path
    name: str
    source_sha256: str

    def is_complete(self) -> bool:
        """True when the marker exists and every file it lists has its recorded size."""
        try:
            meta = json.loads((self.path / MARKER).read_text())
        except (OSError, ValueError):
            return False
        if meta.get("format") != CACHE_FORMAT or meta.get("source_sha256") != self.source_sha256:
            return False
        files = meta.get("files", {})
        return bool(files) and all(
            (self.path / name).is_file() and (self.path / name).stat().st_size == size
            for name, size in files.items()
        )

    def remove(self) -> None:
        """Delete the entry (it will be rebuilt on the next load)."""
        shutil.rmtree(self.path, ignore_errors=True)


def entry_for(gguf: Path, name: str) -> CacheEntry:
    """The cache entry a GGUF file maps to (content-addressed by the file's hash)."""
    sha = file_sha256(gguf)
    return CacheEntry(cache_root() / "models" / f"{name}-{sha[:12]}", name, sha)


def build_entry(entry: CacheEntry, gguf: Path) -> None:
    """Dequantise a GGUF file with transformers and store it as a safetensors folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    with atomic_dir(entry.path) as tmp:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        atomic_write_json(
            tmp / MARKER,
            {
                "format": CACHE_FORMAT,
                "name": entry.name,
                "source": str(gguf),
                "source_sha256": entry.source_sha256,
                "files": files,
            },
        )


def list_entries() -> list[tuple[Path, dict]]:
    """Complete-looking cache entries with their marker metadata."""
    root = cache_root() / "models"
    out = []
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        try:
            out.append((path, json.loads((path / MARKER).read_text())))
        except (OSError, ValueError):
            continue
    return out
