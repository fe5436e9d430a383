"""What `rr eval` measures and how: one dataclass, every field an option, every figure cached
under the settings it depends on."""

from __future__ import annotations

from dataclasses import dataclass

from reveal_release.errors import RRError
from reveal_release.options import at_least, non_negative, open_fraction, option, positive

# The attacks `rr eval` knows, in report order.
ALL_ATTACKS = (
    "relearn",
    "relearn-32",
    "relearn-unrelated",
    "quant-int8",
    "quant-int4",
    "quant-int4-g128",
    "quant-int4-sym",
    "rephrase",
    "jailbreak",
    "mia",
)


def parse_attacks(value: str) -> tuple[str, ...]:
    """'all', 'none' or a comma-separated list of attack names."""
    v = value.strip().lower()
    if v == "all":
        return ALL_ATTACKS
    if v in ("none", ""):
        return ()
    return tuple(a.strip() for a in v.split(",") if a.strip())


def _show_attacks(attacks: tuple[str, ...]) -> str:
    return "all" if tuple(attacks) == ALL_ATTACKS else ",".join(attacks) or "none"


@dataclass
class EvalSettings:
    """The settings of one evaluation."""

    max_new_tokens: int = option(64, "Answer length per probe.", check=at_least(1))
    probe_limit: int = option(
        0, "Held-out probes to use (0: all).", check=non_negative(), flag="--probes"
    )
    qa_limit: int = option(0, "General QA questions (0: all).", check=non_negative(), flag="--qa")
    attacks: tuple[str, ...] = option(
        ALL_ATTACKS,
        "all, none, or some of: " + ",".join(ALL_ATTACKS),
        parse=parse_attacks,
        show=_show_attacks,
    )
    baseline: bool = option(True, "Train the one-shot gradient-ascent baseline for the plot.")
    quant_utility: bool = option(
        True, "Also measure QA accuracy and perplexity of each quantised copy."
    )
    relearn_samples: int = option(8, "Relearning attack data.", check=at_least(1))
    relearn_steps: int = option(8, "Relearning attack steps.", check=at_least(1))
    relearn_more_steps: int = option(
        32, "Steps of the longer relearning attacks (relearn-32, relearn-unrelated).",
        check=at_least(1),
    )  # fmt: skip
    relearn_lr: float = option(5e-4, "Relearning attack learning rate.", check=positive())
    mia_members: int = option(64, "Forget samples the MIA scores.", check=at_least(1), cli=False)
    mia_k: float = option(0.2, "min-k% share of tokens.", check=open_fraction(), cli=False)
    mia_max_new_tokens: int = option(
        96, "Length of the unseen answers the MIA samples.", check=at_least(1), cli=False
    )
    seed: int = option(0, "Seed of the attacks' sampling and training.")

    def __post_init__(self) -> None:
        from reveal_release.options import validate

        validate(self)
        unknown = [a for a in self.attacks if a not in ALL_ATTACKS]
        if unknown:
            raise RRError(
                f"unknown attack '{unknown[0]}': choose all, none or some of "
                f"{', '.join(ALL_ATTACKS)}"
            )
        self.attacks = tuple(self.attacks)
