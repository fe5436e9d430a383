"""Reworded and jailbreak-style probes: the held-out probes wrapped in other framings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reveal_release.evaluate.attacks.base import ATTACKS, Attack, AttackContext
from reveal_release.metrics.probes import reveal_rate
from reveal_release.models import LoadedModel

TEMPLATES = Path(__file__).parent / "templates"


def templates(name: str) -> list[str]:
    """The shipped templates in templates/NAME.txt, each with one {probe}."""
    lines = (TEMPLATES / f"{name}.txt").read_text(encoding="utf-8").splitlines()
    return [ln for ln in (x.strip() for x in lines) if ln and not ln.startswith("#")]


def wrap(probes: list[str], tmpl: list[str]) -> list[str]:
    """Probe i inside template i mod len(templates)."""
    return [tmpl[i % len(tmpl)].replace("{probe}", p) for i, p in enumerate(probes)]


class _Templated(Attack):
    file = ""
    on_base = True

    def run(self, ctx: AttackContext, loaded: LoadedModel) -> dict[str, Any]:
        """Reveal rate on the wrapped held-out probes."""
        prompts = wrap(ctx.probes, templates(self.file))
        res = reveal_rate(
            loaded, ctx.spec, ctx.judge, prompts, max_new_tokens=ctx.settings["max_new_tokens"]
        )
        return {"reveal_rate": res.rate, "n": res.n, "examples": res.rows[:2]}


@ATTACKS.register("rephrase")
class Rephrase(_Templated):
    """The same requests in other words around them (templated rewording)."""

    file = "rephrase"
    description = "held-out probes reworded by templates (templates/rephrase.txt)"


@ATTACKS.register("jailbreak")
class Jailbreak(_Templated):
    """The same requests inside jailbreak-style framings (role play, fiction, overrides)."""

    file = "jailbreak"
    description = "held-out probes inside jailbreak-style framings (templates/jailbreak.txt)"
