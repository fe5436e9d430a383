"""The settings of one reveal (`rr reveal`, and each later release round's reveal)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from reveal_release.options import at_least, fraction, non_negative, one_of, option
from reveal_release.options import validate as validate_fields
from reveal_release.reveal.search_config import STRATEGIES, SearchConfig


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
        "neuralucb",
        "The forget search: neuralucb, random or cover (each instruction in turn).",
        check=one_of("strategy", *STRATEGIES),
    )
    retain_strategy: str = option(
        "bandit",
        "The retain search: bandit (like the forget search, 3 answers an instruction) or cover "
        "(one answer to each retain instruction in turn).",
        check=one_of("retain strategy", "bandit", "cover"),
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
    max_new_tokens: int = option(96, "Answer length of the reveal's samples.", check=at_least(1))

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

    def retain_search(self, budget: int) -> SearchConfig:
        """The retain search; with cover, one answer to each retain instruction in turn.

        Measured on person (README): the bandit's retain set settles on 8 of 44 prompts, and a
        wider one held utility through more rounds; cover is opt-in until code and Harry Potter
        are measured with it.
        """
        bandit = self.search(budget, 1)
        if self.retain_strategy == "bandit":
            return bandit
        return replace(bandit, strategy="cover", samples_per_arm=1, arms_per_step=8, mutate_every=0)

    @property
    def retain_samples(self) -> int:
        """The retain search's budget: as given, else half the forget budget."""
        return self.retain_budget if self.retain_budget is not None else max(self.budget // 2, 1)
