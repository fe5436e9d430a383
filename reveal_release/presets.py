"""Presets: named sets of option values for each command (`--preset quick|default|thorough`).

An option given on the command line wins over the preset, and the preset over the target
spec's [settings] (which hold a target's measured recipe; no preset sets the same options).
"""

from __future__ import annotations

from typing import Any

from reveal_release.errors import RRError

# stage -> option -> value, as a target spec's [settings.STAGE] would write them.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # The demo: a small reveal, the simulated relearning attacker (where a target's spec has
    # one) every third step, and the attacks that undo forgetting most (relearning, 4-bit in
    # groups of 32 and 128: their reveal rates only; no GA baseline). Measured on `code`
    # (README): the same held-out, int4 and relearn-8 figures as an attacker every step.
    "quick": {
        "reveal": {"budget": 32, "retain_budget": 16},
        "release": {"tamper_every": 3},
        "eval": {
            "attacks": "relearn,quant-int4,quant-int4-g128",
            "baseline": False,
            "quant_utility": False,
        },
    },
    # The options' own defaults.
    "default": {},
    # A larger reveal, more rounds, every attack and the GA baseline.
    "thorough": {
        "reveal": {"budget": 192},
        "release": {"rounds": 5},
        "eval": {"attacks": "all", "baseline": True},
    },
}

PRESET_HELP = (
    "quick (the demo: a small reveal, the simulated attacker every third step, the main "
    "attacks), default, or thorough (a larger reveal, 5 rounds, every attack); an option you "
    "give wins"
)


def check_preset(name: str) -> None:
    """A one-line error for an unknown preset."""
    if name not in PRESETS:
        raise RRError(f"unknown preset '{name}': choose one of {', '.join(PRESETS)}")


def apply_preset(
    cfg: Any, name: str, stage: str, explicit: frozenset[str]
) -> tuple[Any, frozenset[str], str]:
    """`cfg` with the preset's options for `stage` on the fields the user did not give; the
    fields now set (for the spec's settings to leave alone) and the flags applied."""
    from reveal_release.options import with_settings

    check_preset(name)
    cfg, applied = with_settings(
        cfg, PRESETS[name].get(stage, {}), explicit, f"preset {name} [{stage}]"
    )
    flags = " ".join(_flag(k, v) for k, v in applied.items())
    return cfg, explicit | frozenset(applied), flags


def _flag(name: str, v: Any) -> str:
    flag = name.replace("_", "-")
    if isinstance(v, bool):
        return f"--{flag}" if v else f"--no-{flag}"
    if isinstance(v, tuple):
        return f"--{flag} " + ",".join(str(x) for x in v)
    return f"--{flag} {v:g}" if isinstance(v, float) else f"--{flag} {v}"
