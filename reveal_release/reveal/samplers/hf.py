"""HF transformers sampler: batched, left padding, KV cache, length buckets, end-of-turn stops."""

from __future__ import annotations

from collections.abc import Sequence

from reveal_release.generation import Generation, GenerationStats, generate
from reveal_release.models import LoadedModel
from reveal_release.reveal.samplers.base import SAMPLERS, Sampler, SamplingConfig


@SAMPLERS.register("hf")
class HFSampler(Sampler):
    """Generates with the in-process transformers model (the default backend)."""

    name = "hf"

    def __init__(self, loaded: LoadedModel):
        self.loaded = loaded

    def generate(
        self, prompts: Sequence[str], cfg: SamplingConfig, system: str | None = None
    ) -> tuple[list[Generation], GenerationStats]:
        """Answer prompts in length-sorted batches of cfg.batch_size."""
        return generate(
            self.loaded,
            prompts,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            seed=cfg.seed,
            system=system,
        )
