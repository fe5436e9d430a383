"""The settings of one reveal (`rr reveal`, and each later release round's reveal)."""

from __future__ import annotations

from dataclasses import dataclass

from reveal_release.options import at_least, fraction, non_negative, one_of, option
from reveal_release.options import validate as validate_fields
from reveal_release.reveal.search import STRATEGIES, SearchConfig


@dataclass(frozen=True)
class RevealConfig:
    """The forget search, then the retain search."""

    budget: int = option(96, "Responses to sample for the forget set.", check=at_least(1))
    retain_budget: int | None = option(
        None,
        "Responses for the retain set (default budget/2; 0: forget set only).",
        check=non_negative(),
    )
    features: str = option(
        "hidden", "Bandit features: hidden or embedder.", check=one_of("features", "hidden",
                                                                        "embedder")
    )  # fmt: skip
    strategy: str = option(
        "neuralucb", "neuralucb or random.", check=one_of("strategy", *STRATEGIES)
    )
    seed: int = option(0, "Seed of the bandit, the sampling and the mutations.")
    # R&R's weighted harmonic mean of relevance and diversity (the paper does not give it).
    diversity_weight: float = option(
        0.5, "Weight of Vendi diversity in the reward.", check=fraction(), cli=False
    )
    max_cosine: float = option(
        0.95, "Near-duplicate answers (embedding cosine above this) are dropped.",
        check=fraction(), cli=False,
    )  # fmt: skip
    retain_max: float = option(
        0.2, "Highest judge score a retain answer may have.", check=fraction(), cli=False
    )
    max_new_tokens: int = option(96, "Answer length.", check=at_least(1), cli=False)

    def __post_init__(self) -> None:
        validate_fields(self)

    def search(self, budget: int, seed_offset: int = 0) -> SearchConfig:
        """The SearchConfig for one of the two searches."""
        return SearchConfig(
            budget=budget,
            strategy=self.strategy,
            seed=self.seed + seed_offset,
            diversity_weight=self.diversity_weight,
            max_new_tokens=self.max_new_tokens,
        )

    @property
    def retain_samples(self) -> int:
        """The retain search's budget: as given, else half the forget budget."""
        return self.retain_budget if self.retain_budget is not None else max(self.budget // 2, 1)
