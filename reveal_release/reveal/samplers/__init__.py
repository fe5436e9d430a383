"""Samplers: one interface, HF transformers and vLLM backends."""

from reveal_release.reveal.samplers.base import SAMPLERS, Sampler, SamplingConfig, make_sampler

__all__ = ["SAMPLERS", "Sampler", "SamplingConfig", "make_sampler"]
