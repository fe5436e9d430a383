"""Membership inference: can min-k% probability tell forget samples from unseen target text?"""

from __future__ import annotations

from typing import Any

from reveal_release.evaluate.attacks.base import ATTACKS, Attack, AttackContext, AttackSkipped
from reveal_release.generation import generate
from reveal_release.metrics.likelihood import answer_token_logps
from reveal_release.metrics.mia import auc, min_k_score
from reveal_release.models import LoadedModel
from reveal_release.runs import relevant


def nonmember_rows(ctx: AttackContext) -> list[dict]:
    """The base model's sampled answers to the held-out probes: target text never trained on."""
    if ctx.base is None:
        raise AttackSkipped("no base model to sample unseen target text from")
    s = ctx.settings
    base = ctx.base

    def sample() -> list[dict]:
        gens, _ = generate(
            base,
            ctx.probes,
            max_new_tokens=s["mia_max_new_tokens"],
            temperature=0.8,
            top_p=0.95,
            seed=s["seed"],
        )
        texts = [g.text for g in gens]
        scores = ctx.judge.score(texts)
        # Like the members, only answers that show the target (judged at the threshold).
        return [
            {"prompt": g.prompt, "response": g.text, "relevance": float(sc)}
            for g, sc in zip(gens, scores, strict=True)
            if g.text.strip() and sc >= ctx.spec.threshold
        ]

    key = f"mia-nonmembers|{base.fingerprint}|{s['mia_max_new_tokens']}|{s['seed']}"
    return ctx.cached(key, sample)


@ATTACKS.register("mia")
class MinK(Attack):
    """AUC of min-k% scores, forget samples (members) against unseen target answers."""

    description = "min-k% probability membership inference, forget samples vs unseen answers"
    on_base = True
    uses_forget = True

    def run(self, ctx: AttackContext, loaded: LoadedModel) -> dict[str, Any]:
        """AUC near 0.5: forget text looks like unseen text; far from it: it leaves a trace."""
        members = relevant(ctx.forget_rows, ctx.spec.threshold)[: ctx.settings["mia_members"]]
        if not members:
            raise AttackSkipped("no forget samples to test membership of: evaluate a run")
        others = nonmember_rows(ctx)
        if not others:
            raise AttackSkipped(
                "the base model's sampled answers to the held-out probes never showed the target"
            )
        k = ctx.settings["mia_k"]
        mem = [
            min_k_score(x, k)
            for x in answer_token_logps(loaded, [(r["prompt"], r["response"]) for r in members])
        ]
        non = [
            min_k_score(x, k)
            for x in answer_token_logps(loaded, [(r["prompt"], r["response"]) for r in others])
        ]
        try:
            value = auc(mem, non)
        except ValueError:
            raise AttackSkipped("no answer had a token to score") from None
        return {
            "auc": value,
            "members": len(mem),
            "nonmembers": len(non),
            "k": k,
            "member_score": sum(mem) / len(mem),
            "nonmember_score": sum(non) / len(non),
        }
