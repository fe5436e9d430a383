"""The settings of `rr release`: one frozen dataclass, saved in the run's manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from reveal_release.errors import RRError

DEFAULT_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ReleaseConfig:
    """Rounds, loss, LoRA shape, optimiser and stopping rules of one release."""

    rounds: int = 3
    update: str = "lora"
    loss: str = "npo"
    retain_loss: str = "kl"
    # L = L_forget + retain_weight * L_retain + orth_weight * L_orth + l2_weight * ||theta_k||^2
    retain_weight: float = 1.0
    orth_weight: float = 0.5
    l2_weight: float = 0.0
    beta: float = 0.1  # NPO and SimNPO inverse temperature
    gamma: float = 0.0  # SimNPO reward margin
    rank: int = 8
    alpha: float = 32.0
    target_modules: tuple[str, ...] = DEFAULT_MODULES
    steps: int = 16  # optimiser steps per round
    batch_size: int = 4  # forget (and retain) sequences per step
    lr: float = 1e-3
    max_grad_norm: float = 1.0
    max_length: int = 128
    checkpoint_every: int = 4
    # A round may end once a bounded forget loss (npo, simnpo, refusal) has stayed below this
    # fraction of its first value for `patience` steps. Off (0) by default: on the embedded
    # model the steps after NPO reaches ~0 are where the retain loss repairs utility.
    converge: float = 0.0
    patience: int = 2
    # Stop when the held-out reveal rate is at or below stop_rate, or when utility drops
    # below these fractions of the base model's (retain accuracy) or rises above (perplexity).
    stop_rate: float = 0.10
    min_retain_ratio: float = 0.9
    max_ppl_ratio: float = 1.1
    # Each round after the first reveals again from the current model.
    reveal_budget: int = 16
    reveal_max_new_tokens: int = 64
    # Held-out measurement after each round.
    probe_max_new_tokens: int = 64
    probe_limit: int = 0  # held-out probes per measurement (0: all)
    qa_limit: int = 0  # retain QA questions per measurement (0: all)
    seed: int = 0
    extra: dict = field(default_factory=dict)

    def validate(self) -> ReleaseConfig:
        """Raise a one-line RRError for settings that cannot work."""
        checks = [
            (self.rounds >= 1, "--rounds must be at least 1"),
            (self.steps >= 1, "--steps must be at least 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (1 <= self.rank <= 256, "--rank must be between 1 and 256"),
            (self.alpha > 0, "--alpha must be positive"),
            (self.lr > 0, "--lr must be positive"),
            (self.beta > 0, "--beta must be positive"),
            (self.retain_weight >= 0, "--retain-weight must be >= 0"),
            (self.orth_weight >= 0, "--orth-weight must be >= 0"),
            (self.l2_weight >= 0, "--l2-weight must be >= 0"),
            (self.max_length >= 16, "--max-length must be at least 16"),
            (self.reveal_budget >= 1, "--reveal-budget must be at least 1"),
            (0 <= self.stop_rate <= 1, "--stop-rate must be in [0, 1]"),
        ]
        for ok, msg in checks:
            if not ok:
                raise RRError(msg)
        return self

    def to_json(self) -> dict:
        """The config as plain JSON (tuples become lists)."""
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @property
    def scaling(self) -> float:
        """LoRA's s = alpha / r."""
        return self.alpha / self.rank
