"""The sampler interface every generation backend implements."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from reveal_release.generation import Generation, GenerationStats
from reveal_release.models import LoadedModel
from reveal_release.registry import Registry


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample: the same config and seed on the same backend give the same samples."""

    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    batch_size: int = 8


class Sampler(ABC):
    """Generates chat answers for user prompts from one model (optionally with a LoRA adapter)."""

    name: str = ""

    @abstractmethod
    def generate(
        self, prompts: Sequence[str], cfg: SamplingConfig, system: str | None = None
    ) -> tuple[list[Generation], GenerationStats]:
        """Answer each prompt once, in order."""

    def close(self) -> None:
        """Free what the backend holds (processes, memory)."""


SAMPLERS: Registry[type[Sampler]] = Registry("sampler backend")
# Backends live in their own modules; importing them fills the registry.
_BACKEND_MODULES = {
    "hf": "reveal_release.reveal.samplers.hf",
    "vllm": "reveal_release.reveal.samplers.vllm",
}


def make_sampler(backend: str, loaded: LoadedModel, **options: object) -> Sampler:
    """Build the sampler called `backend` ('hf' or 'vllm') for a loaded model."""
    if backend in _BACKEND_MODULES:
        importlib.import_module(_BACKEND_MODULES[backend])
    return SAMPLERS.get(backend)(loaded, **options)
