"""The settings of `rr release`: one frozen dataclass, saved in the run's manifest.

It is a LoRA shape, an optimiser and an objective (the training layer's configs) plus what
only a release has: rounds, the update rule, the O-LoRA and L2 terms, the stop rules and the
per-round reveal and measurement. Every field is one `rr release` option (or a documented
setting with cli=False).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from reveal_release.errors import RRError
from reveal_release.options import (
    at_least,
    below_one,
    fraction,
    non_negative,
    one_of,
    option,
    positive,
)
from reveal_release.r2f.fit_config import VIEW_SOURCES
from reveal_release.r2f.step import PRECONDITIONERS
from reveal_release.train.config import DEFAULT_MODULES, LoraSpec, ObjectiveConfig, OptimConfig

__all__ = ["DEFAULT_MODULES", "ReleaseConfig"]

# R2F's relative step per update, with the factored preconditioner and the KL retain term: on
# the embedded model it kept the utility budget on code, person and Harry Potter and forgot
# Harry Potter to 0.05 (README, R2F; the plain 1e-4 step of before left 0.75 there).
R2F_STEP = 1e-3

# Options only a LoRA round reads: R2F trains the forget loss (--loss), the retain term
# (--retain-loss) and the tamper term (--tamper-steps, --tamper-lr, --tamper-weight,
# --tamper-beta, --tamper-every) with its own step (--r2f-step), and ignores these.
LORA_ONLY = (
    "alpha", "lr", "orth_weight", "l2_weight", "max_epochs", "focus",
    "qat", "qat_weight", "fp_weight", "sam_rho", "mask", "tamper_loss", "tamper_quant",
)  # fmt: skip
# Options R2F reads when given, but whose values in a target spec or preset were tuned for LoRA
# rounds: under --update r2f those are put back to their defaults. Measured (README, R2F): the
# specs' attacker took R2F's Harry Potter round from 0.05 to 0.35 and its code round over the
# utility budget (retain 0.77x).
LORA_TUNED = ("tamper_steps", "tamper_lr", "tamper_weight", "tamper_beta", "tamper_every")
# Options only an R2F round reads.
R2F_ONLY = (
    "decoder", "r2f_step", "r2f_momentum", "r2f_precondition", "r2f_retain_guard",
    "r2f_views_per_pass", "r2f_views", "r2f_null_space",
)  # fmt: skip


@dataclass(frozen=True)
class ReleaseConfig(ObjectiveConfig, OptimConfig, LoraSpec):
    """Rounds, loss, LoRA shape, optimiser and stopping rules of one release.

    L = L_forget + retain_weight * L_retain + orth_weight * L_orth + l2_weight * ||theta_k||^2
    """

    rounds: int = option(3, "Most rounds to run.", check=at_least(1))
    update: str = option("lora", "Update rule: lora or r2f.")
    decoder: str = option("", "With --update r2f: a decoder from `rr r2f fit`.")
    r2f_step: float = option(
        R2F_STEP,
        "With --update r2f: each step moves every adapted layer along its decoded gradient by "
        "this fraction of the layer's weight norm (R2F's own step size; --lr is LoRA's).",
        check=positive(),
    )
    r2f_momentum: float = option(
        0.0,
        "With --update r2f: step along an average of the steps' decoded gradient directions, "
        "each step's weighted by 1 - this (0: each step's own).",
        check=below_one(),
    )
    r2f_precondition: str = option(
        "factored",
        "With --update r2f: factored divides each decoded gradient by the square root of a "
        "factored running mean of its squares (Adafactor's second moment: Adam's scaling at "
        "d_in + d_out numbers a layer) before the step; whiten multiplies it by the inverse "
        "of the layer's input covariance (K-FAC's input factor); galore runs Adam on the "
        "gradient's projection onto the first one's top-r output directions (GaLore), at "
        "Adam's own step sizes (--r2f-step sets the first), so the round's change keeps rank "
        "r; none: the gradient as decoded.",
        check=one_of("preconditioner", "none", *PRECONDITIONERS),
    )
    r2f_retain_guard: float = option(
        0.0,
        "With --update r2f: halve a step (up to 4 times) while it raised the retain batch's "
        "answer NLL by more than this many nats (0: off).",
        check=non_negative(),
    )
    r2f_views: str = option(
        "paraphrases",
        "With --update r2f: what tells the decoder's views apart. paraphrases: each view rewords "
        "the forget prompts (the model's own paraphrases), one forward/backward of the forget "
        "batch per view; projections: the forget prompts as they are, in one pass, each view "
        "a fresh random A of the same gradient (a quarter of the passes with 4 views).",
        check=one_of("view source", *VIEW_SOURCES),
    )
    # AlphaEdit's projection (arXiv 2410.02355) for R2F: measured in the README (R2F section).
    r2f_null_space: float = option(
        0.0,
        "With --update r2f: keep every step out of the input directions that carry this share "
        "of the retain answers' input energy at each layer (their null space, as AlphaEdit "
        "projects an edit), so the retain answers' outputs move less (0: off; 1: not at all).",
        check=fraction(),
    )
    r2f_views_per_pass: int = option(
        0,
        "With --update r2f: views of the forget batch run in one forward/backward pass "
        "(0: all; fewer needs less memory).",
        check=non_negative(),
    )
    orth_weight: float = option(0.5, "Weight l1 of the O-LoRA term.", check=non_negative())
    l2_weight: float = option(0.0, "Weight l2 of ||theta_k||^2.", check=non_negative())
    # Stop when the held-out reveal rate is at or below stop_rate, or when utility drops
    # below these fractions of the base model's (retain accuracy) or rises above (perplexity).
    stop_rate: float = option(
        0.10, "Stop once the held-out reveal rate is at or below this.", check=fraction()
    )
    min_retain_ratio: float = option(
        0.9, "Utility budget: retain accuracy at least this x the base's.", check=non_negative()
    )
    max_ppl_ratio: float = option(
        1.1, "Utility budget: perplexity at most this x the base's.", check=positive()
    )
    # Measured on person (README, durable forgetting): the round that reaches the bar often
    # overshoots it and spends the budget; part of its update keeps both.
    shrink: int = option(
        0,
        "When a round spends the utility budget, bisect the size of its update this many times "
        "(0.5, then 0.75 or 0.25...) and keep the largest part within the budget (0: the round "
        "is rolled back; round 1 is kept as trained).",
        check=non_negative(),
    )
    snap: str = option(
        "auto",
        "Hand out the release on the quantisation grid its base sits on (a dequantised GGUF): "
        "each round's model rounded onto it, error-compensated on the forget sets, so that "
        "quantising it to that format keeps the forgetting. auto: when the base is on a grid; "
        "none: never; or a scheme (int4, int4-sym...).",
    )
    # Measured (README, durable forgetting): rounding a trained update onto the grid keeps the
    # forgetting on the probes but not its depth against relearning; 1.5 with --tamper-steps
    # kept it on Harry Potter.
    snap_gain: float = option(
        1.0,
        "With --snap: the update W - W0 is scaled by this before it is rounded onto the grid "
        "(1: as trained).",
        check=positive(),
    )
    # Measured on person (README, durable forgetting): NPO on the names alone removed them but
    # spent more utility than NPO on whole answers, so it is off by default.
    focus: str = option(
        "none",
        "auto: the forget loss scores only the tokens the judge marks as the target (the "
        "person judge's names), where it can mark them; none: whole answers.",
    )
    stop_quant: str = option(
        "int4-g128",
        "The target counts as gone only when this quantised copy forgets it too "
        "(int4, int4-g128, int4-sym, int8; none: off).",
    )
    # Each round after the first reveals again from the current model.
    reveal_budget: int = option(
        16, "Answers each later round samples to reveal again.", check=at_least(1)
    )
    reveal_max_new_tokens: int = option(
        64, "Answer length of the later rounds' reveals.", check=at_least(1), cli=False
    )
    # Held-out measurement after each round.
    probe_max_new_tokens: int = option(
        64, "Answer length of the held-out probes.", check=at_least(1), cli=False
    )
    probe_limit: int = option(
        0, "Held-out probes per measurement (0: all).", check=non_negative(), flag="--probes"
    )
    qa_limit: int = option(
        0, "Retain QA questions per measurement (0: all).", check=non_negative(), flag="--qa"
    )
    seed: int = option(0, "Seed of batches, LoRA initialisations and later reveals.")

    def __post_init__(self) -> None:
        from reveal_release.quantizers import scheme
        from reveal_release.release.updates import UPDATES

        super().__post_init__()
        UPDATES.get(self.update)
        for name in (self.stop_quant, self.snap):
            if name not in ("none", "auto"):
                scheme(name)
        if self.focus not in ("auto", "none"):
            raise RRError(f"--focus takes auto or none, not {self.focus!r}")
        if self.stop_quant == "auto":
            raise RRError("--stop-quant takes a scheme or none, not auto")
        if self.mask != "none" and self.sam_rho > 0:
            raise RRError("--mask disruption and --sam-rho do not combine: give one of them")
        if self.mask != "none" and self.update != "lora":
            raise RRError(f"--mask {self.mask} works with --update lora, not {self.update}")
        if self.update == "r2f" and not self.decoder:
            raise RRError("--update r2f needs --decoder PATH (make one with `rr r2f fit`)")
        if self.r2f_precondition == "galore" and self.r2f_momentum:
            raise RRError(
                "--r2f-momentum does not combine with --r2f-precondition galore (Adam keeps its "
                "own average): drop one of them"
            )

    def unused_by_update(self, given: frozenset[str] = frozenset()) -> dict[str, object]:
        """The options of the other update rule set away from their defaults (name -> value):
        the LoRA-only ones under --update r2f, the R2F-only ones under --update lora; under r2f
        also the LORA_TUNED ones not in `given` (a spec's or preset's LoRA recipe)."""
        default = self._defaults()
        other = R2F_ONLY if self.update == "lora" else LORA_ONLY
        if self.update == "r2f":
            other += tuple(k for k in LORA_TUNED if k not in given)
        return {k: getattr(self, k) for k in other if getattr(self, k) != default[k]}

    def unused_at_defaults(self, given: frozenset[str] = frozenset()) -> ReleaseConfig:
        """The same config with every option unused_by_update(given) names put back to its
        default."""
        default = self._defaults()
        return replace(self, **{k: default[k] for k in self.unused_by_update(given)})

    def _defaults(self) -> dict[str, object]:
        return {f.name: f.default for f in fields(self)}

    def to_json(self) -> dict:
        """The config as plain JSON (tuples become lists, as they come back from a file)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
