"""The instruction search's settings (and the bandit's), readable without loading torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BanditConfig:
    """NeuralUCB settings (INSTINCT's defaults: nu = 1, lam = 0.1)."""

    hidden: int = 100
    lam: float = 0.1
    nu: float = 1.0
    lr: float = 1e-3
    train_steps: int = 200
    explore: float = 0.3
    seed: int = 0


STRATEGIES = ("neuralucb", "random", "cover")


@dataclass(frozen=True)
class SearchConfig:
    """How much to sample and how to pick instructions."""

    budget: int = 96
    samples_per_arm: int = 3
    arms_per_step: int = 4
    warmup_steps: int = 2
    diversity_weight: float = 0.5
    mutate_every: int = 2
    mutations_per_step: int = 2
    strategy: str = "neuralucb"
    seed: int = 0
    max_new_tokens: int = 96
    temperature: float = 0.8
    top_p: float = 0.95
    bandit: BanditConfig = field(default_factory=BanditConfig)

    @property
    def steps(self) -> int:
        """Bandit steps the budget pays for."""
        return max(1, math.ceil(self.budget / (self.samples_per_arm * self.arms_per_step)))
