"""Relearning attack: a few fine-tuning steps on a few forget samples; how much comes back."""

from __future__ import annotations

import time
from typing import Any

from reveal_release.evaluate.attacks.base import (
    ATTACKS,
    Attack,
    AttackContext,
    AttackSkipped,
    working_copy,
)
from reveal_release.metrics.probes import reveal_rate
from reveal_release.models import LoadedModel
from reveal_release.runs import relevant
from reveal_release.train.adversary import ATTACKER_LORA
from reveal_release.train.config import OptimConfig
from reveal_release.train.data import batch_indices, collate, encode_rows
from reveal_release.train.logprobs import answer_nll
from reveal_release.train.loop import run_steps
from reveal_release.train.lora import attach_lora


def relearn_rows(ctx: AttackContext) -> list[dict]:
    """The attacker's data: the most relevant forget samples (settings['relearn_samples'])."""
    rows = relevant(ctx.forget_rows, ctx.spec.threshold, best_first=True)
    return rows[: ctx.settings["relearn_samples"]]


def relearn(loaded: LoadedModel, rows: list[dict], steps: int, lr: float, seed: int) -> tuple:
    """Fine-tune a LoRA module on a copy of `loaded` (answer NLL); (the copy, its history)."""
    work = working_copy(loaded)
    peft = attach_lora(work.model, ATTACKER_LORA, seed=seed)
    optim = OptimConfig(steps=steps, lr=lr)
    examples = encode_rows(work.tokenizer, rows, optim.max_length)
    pad, size = work.tokenizer.pad_token_id, min(4, len(examples))

    def nll(step: int) -> dict:
        idx = batch_indices(len(examples), size, seed, step)
        return {"nll": answer_nll(peft, collate([examples[i] for i in idx], pad, peft.device))}

    result = run_steps(peft, nll, {"nll": 1.0}, optim, explode_key="")
    work.model = peft
    return work, result.history


class _Relearn(Attack):
    """LoRA fine-tuning (next-token loss) of a copy, then the held-out probes."""

    steps_setting = "relearn_steps"

    def rows(self, ctx: AttackContext) -> list[dict]:
        """The attacker's data: the most relevant forget samples."""
        rows = relearn_rows(ctx)
        if not rows:
            raise AttackSkipped(
                "no forget samples to relearn from: evaluate a run (rr eval --run DIR)"
            )
        return rows

    def run(self, ctx: AttackContext, loaded: LoadedModel) -> dict[str, Any]:
        """Held-out reveal rate after the attacker's fine-tuning of a copy."""
        rows = self.rows(ctx)
        s, steps = ctx.settings, ctx.settings[self.steps_setting]
        start = time.perf_counter()
        work, history = relearn(loaded, rows, steps, s["relearn_lr"], s["seed"])
        probes = reveal_rate(
            work, ctx.spec, ctx.judge, ctx.probes, max_new_tokens=s["max_new_tokens"]
        )
        return {
            "reveal_rate": probes.rate,
            "n": probes.n,
            "samples": len(rows),
            "steps": steps,
            "lr": s["relearn_lr"],
            "loss_first": history[0]["nll"],
            "loss_last": history[-1]["nll"],
            "train_seconds": time.perf_counter() - start,
            "examples": probes.rows[:2],
        }


@ATTACKS.register("relearn")
class Relearn(_Relearn):
    """A few steps on a few forget samples (--relearn-steps, 8)."""

    description = "a few LoRA fine-tuning steps on a few forget samples"
    uses_forget = True


@ATTACKS.register("relearn-32")
class RelearnMore(Relearn):
    """More steps on the same forget samples (--relearn-more-steps, 32)."""

    description = "more LoRA fine-tuning steps on the same forget samples"
    steps_setting = "relearn_more_steps"


@ATTACKS.register("relearn-unrelated")
class RelearnUnrelated(_Relearn):
    """Fine-tuning on data that is not the target (the run's retain answers): Lucki et al. and
    Deeb & Roger found that even unrelated data brings back much of what was removed."""

    description = "LoRA fine-tuning on unrelated text (the run's retain answers), no forget data"
    uses_retain = True
    steps_setting = "relearn_more_steps"

    def rows(self, ctx: AttackContext) -> list[dict]:
        """As many retain answers as the other relearning attacks take forget samples."""
        rows = [r for r in ctx.retain_rows if r.get("response", "").strip()]
        if not rows:
            raise AttackSkipped(
                "no retain answers to fine-tune on: evaluate a run (rr eval --run DIR)"
            )
        return rows[: ctx.settings["relearn_samples"]]
