"""Relearning attack: a few fine-tuning steps on a few forget samples; how much comes back."""

from __future__ import annotations

import time
from typing import Any

from reveal_release.evaluate.attacks import (
    ATTACKS,
    Attack,
    AttackContext,
    AttackSkipped,
    working_copy,
)
from reveal_release.evaluate.probes import reveal_rate
from reveal_release.models import LoadedModel


def relearn_rows(ctx: AttackContext) -> list[dict]:
    """The attacker's data: the most relevant forget samples (settings['relearn_samples'])."""
    rows = [r for r in ctx.forget_rows if r.get("relevance", 0.0) >= ctx.spec.threshold]
    rows.sort(key=lambda r: -float(r.get("relevance", 0.0)))
    return rows[: ctx.settings["relearn_samples"]]


@ATTACKS.register("relearn")
class Relearn(Attack):
    """LoRA fine-tuning (next-token loss) on a few forget samples, then the held-out probes."""

    description = "a few LoRA fine-tuning steps on a few forget samples"
    uses_forget = True

    def run(self, ctx: AttackContext, loaded: LoadedModel) -> dict[str, Any]:
        """Held-out reveal rate after the attacker's fine-tuning of a copy."""
        import torch

        from reveal_release.release.config import ReleaseConfig
        from reveal_release.release.data import batch_indices, collate, encode_rows
        from reveal_release.release.lora import attach_lora, trainable
        from reveal_release.release.losses import sequence_logps

        rows = relearn_rows(ctx)
        if not rows:
            raise AttackSkipped(
                "no forget samples to relearn from: evaluate a run (rr eval --run DIR)"
            )
        s = ctx.settings
        start = time.perf_counter()
        work = working_copy(loaded)
        cfg = ReleaseConfig(rank=8, alpha=32)
        peft = attach_lora(work.model, cfg, seed=s["seed"])
        params = trainable(peft)
        opt = torch.optim.AdamW(params.values(), lr=s["relearn_lr"], weight_decay=0.0)
        examples = encode_rows(work.tokenizer, rows, cfg.max_length)
        pad = work.tokenizer.pad_token_id
        peft.train()
        losses = []
        for step in range(s["relearn_steps"]):
            idx = batch_indices(len(examples), min(4, len(examples)), s["seed"], step)
            logp, n = sequence_logps(peft, collate([examples[i] for i in idx], pad, peft.device))
            loss = -(logp.sum() / n.sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            opt.step()
            losses.append(float(loss.detach()))
        peft.eval()
        work.model = peft
        probes = reveal_rate(
            work, ctx.spec, ctx.judge, ctx.probes, max_new_tokens=s["max_new_tokens"]
        )
        return {
            "reveal_rate": probes.rate,
            "n": probes.n,
            "samples": len(rows),
            "steps": s["relearn_steps"],
            "lr": s["relearn_lr"],
            "loss_first": losses[0],
            "loss_last": losses[-1],
            "train_seconds": time.perf_counter() - start,
            "examples": probes.rows[:2],
        }
