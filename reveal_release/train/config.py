"""Training settings: the LoRA module's shape, the optimiser and the forget/retain objective."""

from __future__ import annotations

import math
from dataclasses import dataclass

from reveal_release.errors import RRError
from reveal_release.options import (
    at_least,
    between,
    comma_list,
    non_empty,
    non_negative,
    one_of,
    option,
    positive,
)
from reveal_release.options import validate as validate_fields


def parse_schemes(text: str) -> tuple[str, ...]:
    """'none' -> (); 'int4, int4-g128' -> ('int4', 'int4-g128')."""
    return () if text.strip().lower() in ("", "none", "off") else comma_list(text)


DEFAULT_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraSpec:
    """The shape of one LoRA module: rank, alpha and the linear layers it adapts."""

    rank: int = option(8, "LoRA rank r of each round.", check=between(1, 256))
    alpha: float = option(32.0, "LoRA alpha (s = alpha / r).", check=positive())
    target_modules: tuple[str, ...] = option(
        DEFAULT_MODULES,
        "Comma-separated module names that get LoRA.",
        check=non_empty(),
        parse=comma_list,
        show=",".join,
    )

    def __post_init__(self) -> None:
        validate_fields(self)

    @property
    def scaling(self) -> float:
        """LoRA's s = alpha / r."""
        return self.alpha / self.rank


@dataclass(frozen=True)
class OptimConfig:
    """AdamW steps on the module: how many, how large, on how much data, how often saved."""

    steps: int = option(16, "Optimiser steps per round.", check=at_least(1))
    batch_size: int = option(4, "Forget and retain sequences per step.", check=at_least(1))
    max_epochs: float = option(
        0.0,
        "Cap a round's steps at this many passes over its forget set (0: no cap); later "
        "rounds reveal fewer answers.",
        check=non_negative(),
    )
    lr: float = option(1e-3, "Learning rate of round k's module.", check=positive())
    max_grad_norm: float = option(1.0, "Gradient-norm clip.", check=positive(), cli=False)
    max_length: int = option(
        128, "Tokens per training sequence (prompt and answer).", check=at_least(16), cli=False
    )
    checkpoint_every: int = option(
        4, "Save training state every N steps (resume).", check=at_least(1)
    )
    # On the embedded model the steps after NPO reaches ~0 are where the retain loss repairs
    # utility, so convergence is off by default.
    converge: float = option(
        0.0,
        "End a round once the forget loss is below this x its first (0: off).",
        check=non_negative(),
    )
    patience: int = option(
        2, "Steps the forget loss must stay under --converge.", check=at_least(1), cli=False
    )
    # Fan et al. (ICML 2025, arXiv 2502.05374): SAM on the forget loss resists relearning.
    sam_rho: float = option(
        0.0, "SAM radius on the forget loss: its gradient is taken at theta + rho g/|g| (0: off).",
        check=non_negative(),
    )  # fmt: skip

    # Sondej et al. 2025 (MUDMAN, arXiv 2506.12484): update only where unlearning and
    # retaining agree in sign.
    mask: str = option(
        "none",
        "disruption: keep the forget gradient only where its sign agrees with the retain "
        "gradient's running average (none: off).",
        check=one_of("mask", "none", "disruption"),
    )
    gradient_checkpointing: bool = option(
        False,
        "Recompute each layer's activations in the backward pass instead of keeping them: "
        "less memory for large models, about one more forward pass of time.",
    )

    def __post_init__(self) -> None:
        validate_fields(self)
        if self.mask != "none" and self.sam_rho > 0:
            raise RRError("--mask disruption and --sam-rho do not combine: give one of them")

    def steps_for(self, n_forget: int) -> int:
        """A round's optimiser steps: --steps, capped at --max-epochs passes over its answers."""
        if self.max_epochs <= 0:
            return self.steps
        return max(1, min(self.steps, math.ceil(self.max_epochs * n_forget / self.batch_size)))


@dataclass(frozen=True)
class ObjectiveConfig:
    """L = L_forget + retain_weight * L_retain, with the losses named in their registries."""

    loss: str = option(
        "npo", "Forget loss: npo, ga, refusal, simnpo, generic or generic-dpo (person)."
    )
    retain_loss: str = option("kl", "Retain loss: kl or nll.")
    retain_weight: float = option(1.0, "Weight a of the retain loss.", check=non_negative())
    beta: float = option(0.1, "NPO / SimNPO beta.", check=positive())
    gamma: float = option(0.0, "SimNPO reward margin.", check=non_negative(), cli=False)
    qat: tuple[str, ...] = option(
        (),
        "Quantisation-aware: the losses also on the fake-quantised merged weights, one scheme "
        "per step in turn (int4, int4-g128, int4-sym, int8; none: off).",
        parse=parse_schemes,
        show=lambda v: ",".join(v) or "none",
    )
    qat_weight: float = option(
        1.0, "Weight of the quantised losses against the full-precision ones.", check=positive()
    )
    fp_weight: float = option(
        1.0,
        "Weight of the full-precision losses (0 with --qat: train the quantised model alone).",
        check=non_negative(),
    )
    # Tamirisa et al. 2024 (arXiv 2408.00761), first order: resist the relearning attack.
    tamper_steps: int = option(
        0,
        "Tamper-resistant: the forget loss also taken after N simulated relearning steps on "
        "the step's forget batch, scored on other forget answers (0: off).",
        check=non_negative(),
    )
    tamper_lr: float = option(
        2e-3, "Learning rate of the simulated relearning attacker.", check=positive()
    )
    tamper_weight: float = option(
        1.0, "Weight of the forget loss after the simulated attack.", check=positive()
    )
    tamper_beta: float = option(
        0.0,
        "Beta of the forget loss after the simulated attack (0: --beta); a smaller one keeps "
        "a DPO or NPO loss pushing after its margin at the release is won.",
        check=non_negative(),
    )
    tamper_loss: str = option(
        "",
        "Forget loss after the simulated attack (empty: --loss); npo scores the judge's spans "
        "alone (the names), which the attack must raise again for the target to return; with "
        "--loss generic-dpo, generic-pref asks the attacked model to find the generic word "
        "likelier than the name (no reference).",
    )
    tamper_every: int = option(
        1,
        "With --tamper-steps: the simulated attack on every Nth training step only (1: every "
        "step), for a cheaper round.",
        check=at_least(1),
    )
    tamper_quant: str = option(
        "none",
        "The simulated attacker starts from this fake-quantised copy (the grid a release is "
        "rounded onto: int4 for a Q4_1 base; none: the full-precision model).",
    )

    def check_pairs(self) -> None:
        """A paired --tamper-loss needs a --loss that makes its pairs (checked once the
        target spec's settings are in)."""
        from reveal_release.train.losses import FORGET_LOSSES, ForgetLoss

        if not self.tamper_loss or self.tamper_loss == self.loss:
            return
        pairs = FORGET_LOSSES.get(self.tamper_loss).chosen_rows
        if pairs not in (ForgetLoss.chosen_rows, FORGET_LOSSES.get(self.loss).chosen_rows):
            raise RRError(
                f"--tamper-loss {self.tamper_loss} is a paired loss whose pairs --loss "
                f"{self.loss} does not make: give npo, ga or simnpo, or --loss generic-dpo"
            )

    def __post_init__(self) -> None:
        from reveal_release.quantizers import scheme
        from reveal_release.train.losses import FORGET_LOSSES, RETAIN_LOSSES

        validate_fields(self)
        FORGET_LOSSES.get(self.loss)
        RETAIN_LOSSES.get(self.retain_loss)
        if self.tamper_loss:
            FORGET_LOSSES.get(self.tamper_loss)
        for name in self.qat:
            scheme(name)
        if self.tamper_quant != "none":
            scheme(self.tamper_quant)
        if self.fp_weight == 0 and not self.qat:
            raise RRError("--fp-weight 0 leaves no loss without --qat: give a --qat scheme")
