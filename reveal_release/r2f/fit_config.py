"""What `rr r2f fit` fits on, as a config the command line reads without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from reveal_release.options import at_least, between, comma_list, non_empty, option, validate
from reveal_release.train.config import DEFAULT_MODULES

MAX_VIEWS, MAX_RANK = 16, 64
# What tells a decoder's views apart (rr release --r2f-views, rr r2f check --views-from).
VIEW_SOURCES = ("paraphrases", "projections")


@dataclass(frozen=True)
class FitConfig:
    """What `rr r2f fit` fits on: how many prompts, views per prompt, sketch rank, layer kinds."""

    views: int = option(4, "Paraphrased views per prompt (1-16).", check=between(1, MAX_VIEWS))
    rank: int = option(8, "LoRA rank r of the sketches (1-64).", check=between(1, MAX_RANK))
    prompts: int = option(24, "Prompts to build pairs from.", check=at_least(8))
    layers: tuple[str, ...] = option(
        DEFAULT_MODULES, "Comma-separated linear layer kinds.", check=non_empty(),
        parse=comma_list, show=",".join,
    )  # fmt: skip
    seed: int = option(0, "Seed of the views and the random projections.")

    def __post_init__(self) -> None:
        validate(self)


def check_range(views: int, rank: int) -> None:
    """A one-line error for a view count or rank out of range (for library callers)."""
    FitConfig(views=views, rank=rank)
