"""Every derived seed in one place, so a round, a batch stream or a view is reproducible."""

from __future__ import annotations

_STREAMS = {"forget": 0, "retain": 7}


def batch_stream(seed: int, round_: int, stream: str = "forget") -> int:
    """The seed of a round's forget or retain batch order (batch_indices adds the step)."""
    return seed * 131 + round_ + _STREAMS[stream]


def lora_init(seed: int, round_: int) -> int:
    """The seed of round k's fresh LoRA module (its random A)."""
    return seed * 1009 + round_


def sketch_view(seed: int, round_: int, step: int, view: int) -> int:
    """The seed of one R2F view's random projection A at a step of a round."""
    return lora_init(seed, round_) * 10_000 + step * 100 + view


def round_reveal(seed: int, round_: int) -> int:
    """The seed of round k's reveal and of its paraphrased views."""
    return seed + round_


def batch_order(seed: int, step: int) -> int:
    """The generator seed of one step's batch (a fixed function of seed and step: exact resume)."""
    return seed * 1_000_003 + step
