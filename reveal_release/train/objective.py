"""The unlearning objective of one module: L_forget + a * L_retain on batches drawn per step."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from reveal_release.errors import RRError
from reveal_release.parallel import Processes
from reveal_release.train.adversary import ATTACKER_LORA, RelearnAdversary
from reveal_release.train.config import ObjectiveConfig, OptimConfig
from reveal_release.train.data import (
    IGNORE,
    Example,
    batch_indices,
    collate,
    encode_rows,
    focused,
    other_indices,
)
from reveal_release.train.fake_quant import fake_quantized
from reveal_release.train.logprobs import answer_nll, forget_logps, reference_logps
from reveal_release.train.losses import FORGET_LOSSES, RETAIN_LOSSES, ForgetLoss
from reveal_release.train.reference_cache import ReferenceCache
from reveal_release.train.tamper_set import TamperSet


class UnlearnObjective:
    """The forget and retain terms of a PEFT model's step; batches are a function of the step.

    With `cfg.qat` it adds the same terms on the fake-quantised merged weights ("forget_q",
    "retain_q"), one scheme per step in turn; references are computed once, adapter off, in
    full precision, and serve both. With `sync` of several processes each takes its shard of
    every step's batch (the batch is the same function of the step on every process).
    """

    def __init__(
        self,
        peft_model: Any,
        tokenizer: Any,
        forget_rows: Sequence[dict],
        retain_rows: Sequence[dict],
        cfg: ObjectiveConfig,
        optim: OptimConfig,
        seeds: tuple[int, int],
        sync: Processes | None = None,
    ):
        self.model, self.cfg, self.batch_size = peft_model, cfg, optim.batch_size
        self.sync = sync or Processes()
        self.forget_seed, self.retain_seed = seeds
        self.forget_loss = FORGET_LOSSES.get(cfg.loss)()
        self.retain_loss = RETAIN_LOSSES.get(cfg.retain_loss)()
        rows = self.forget_loss.training_rows(forget_rows)
        self.forget = focused(encode_rows(tokenizer, rows, optim.max_length))
        self.chosen = self._chosen(tokenizer, forget_rows, optim.max_length)
        self.retain = encode_rows(tokenizer, retain_rows, optim.max_length)
        if not self.forget:
            raise RRError("the forget set has no usable answers: nothing to train on")
        self.use_retain = cfg.retain_weight > 0 and bool(self.retain)
        self.pad = tokenizer.pad_token_id
        self.retain_ref = ReferenceCache(self.retain_loss, peft_model, self.retain, self.pad)
        self.ref = self.ref_chosen = None
        if self.forget_loss.needs_reference:
            self.ref = reference_logps(peft_model, self.forget, self.pad, optim.batch_size)
            if self.chosen is not None:
                self.ref_chosen = reference_logps(
                    peft_model, self.chosen, self.pad, optim.batch_size
                )
        self.adversary = self.tamper = None
        self.attacked_loss = self.forget_loss
        # The attacked term's own beta (--tamper-beta), the others' when not given.
        self.tamper_cfg = dataclasses.replace(cfg, beta=cfg.tamper_beta or cfg.beta)
        if cfg.tamper_steps:
            self.adversary = RelearnAdversary.on_peft(
                peft_model, ATTACKER_LORA, cfg.tamper_lr, cfg.tamper_steps, seeds[0]
            )
            attacked = FORGET_LOSSES.get(cfg.tamper_loss or cfg.loss)()
            if type(attacked).chosen_rows is not ForgetLoss.chosen_rows:
                self.attacked_loss = attacked  # a paired loss on the same pairs
            elif cfg.tamper_loss and cfg.tamper_loss != cfg.loss:
                self.tamper = TamperSet(
                    peft_model, tokenizer, forget_rows, cfg.tamper_loss, optim, seeds[0] + 1
                )

    @property
    def weights(self) -> dict[str, float]:
        """The weight of each term in the summed loss."""
        q, fp, a = self.cfg.qat_weight, self.cfg.fp_weight, self.cfg.retain_weight
        t = self.cfg.tamper_weight
        return {"forget": fp, "retain": fp * a, "forget_q": q, "retain_q": q * a, "forget_t": t}

    @property
    def forget_keys(self) -> tuple[str, ...]:
        """The names of the forget terms (what SAM perturbs for)."""
        return tuple(k for k in ("forget", "forget_q") if k in self.active)

    @property
    def active(self) -> set[str]:
        """The terms this objective computes."""
        keys = {"forget", "retain"} if self.cfg.fp_weight > 0 else set()
        keys |= {"forget_t"} if self.adversary is not None else set()
        return keys | ({"forget_q", "retain_q"} if self.cfg.qat else set())

    @property
    def explode_key(self) -> str:
        """The retain term whose explosion stops training (the quantised one if it is alone)."""
        return "retain" if "retain" in self.active else "retain_q"

    def attacks_at(self, step: int) -> bool:
        """Whether this step takes the simulated relearning attack (--tamper-every)."""
        return step % self.cfg.tamper_every == 0

    def _batch(self, examples: Sequence[Example], seed: int, step: int) -> tuple[list, dict]:
        idx = self.sync.shard(batch_indices(len(examples), self.batch_size, seed, step))
        return idx, collate([examples[i] for i in idx], self.pad, self.model.device)

    def _chosen(self, tokenizer: Any, rows: Sequence[dict], max_length: int) -> list | None:
        """A paired loss's chosen answers, one per forget example (None for other losses)."""
        chosen = self.forget_loss.chosen_rows(rows)
        if chosen is None:
            return None
        out = encode_rows(tokenizer, chosen, max_length)
        if len(out) != len(self.forget):
            raise RRError(f"--loss {self.cfg.loss}: its chosen answers do not pair with its rows")
        return out

    def _forget(self, batch: dict, idx: list, cfg: ObjectiveConfig | None = None, loss=None):
        logp, n = forget_logps(self.model, batch)
        ref = self.ref[idx] if self.ref is not None else None
        if self.chosen is not None:
            alt = collate([self.chosen[i] for i in idx], self.pad, self.model.device)
            chosen, _ = forget_logps(self.model, alt)
            ref_chosen = self.ref_chosen[idx] if self.ref_chosen is not None else None
            logp, ref = (logp, chosen), (ref, ref_chosen)
        return (loss or self.forget_loss)(logp, n, ref, cfg or self.cfg)

    def _tampered(self, batch: dict, idx: list, step: int) -> Any:
        """The forget loss on other forget answers after the simulated relearning attack on
        this batch (TAR's held-out tamper loss: what the attack generalises to is what the
        held-out probes see); this batch again when there are no others."""
        quant = self.cfg.tamper_quant
        with fake_quantized(self.model, quant) if quant != "none" else nullcontext():
            return self._attacked(batch, idx, step)

    def _attacked(self, batch: dict, idx: list, step: int) -> Any:
        # With several processes each holds a shard of the batch: the attacker trains on the
        # whole batch's mean NLL (token shares, mean gradients), and the answers it is scored on
        # are the whole batch's others, sharded and weighted by each process's share of them.
        whole = batch_indices(len(self.forget), self.batch_size, self.forget_seed, step)
        share = self.sync.share(_answer_tokens(batch))
        self.adversary.attack(lambda: answer_nll(self.model, batch) * share, step, self.sync)
        if self.tamper is not None:
            rows = [self.forget[i] for i in whole]
            with self.adversary.active():
                return self.tamper.loss(rows, step, self.tamper_cfg, self.sync)
        others = other_indices(
            len(self.forget), set(whole), self.batch_size, self.forget_seed + 1, step
        )
        weight = 1.0
        if others:  # else this process's part of the batch itself
            idx, weight = self.sync.split(others)
            batch = collate([self.forget[i] for i in idx], self.pad, self.model.device)
        with self.adversary.active():
            return self._forget(batch, idx, self.tamper_cfg, self.attacked_loss) * weight

    def terms(self, step: int, only: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The step's terms by name (retain ones only when used; `only`: just those)."""
        want = set(only) if only is not None else self.active
        idx, forget = self._batch(self.forget, self.forget_seed, step)
        retain, ref = None, None
        if self.use_retain and want & {"retain", "retain_q"}:
            ridx, retain = self._batch(self.retain, self.retain_seed, step)
            ref = self.retain_ref.get(ridx, retain)
            # The retain loss is a mean over answer tokens: with several processes each one's
            # is weighted by its share of the tokens, so that their mean is the whole batch's.
            share = self.sync.share(_answer_tokens(retain))
        out = {}
        if "forget" in want:
            out["forget"] = self._forget(forget, idx)
        if retain is not None and "retain" in want:
            out["retain"] = self.retain_loss(self.model, retain, self.cfg, ref) * share
        if "forget_t" in want and self.adversary is not None and self.attacks_at(step):
            out["forget_t"] = self._tampered(forget, idx, step)
        if self.cfg.qat and want & {"forget_q", "retain_q"}:
            with fake_quantized(self.model, self.cfg.qat[step % len(self.cfg.qat)]):
                if "forget_q" in want:
                    out["forget_q"] = self._forget(forget, idx)
                if retain is not None and "retain_q" in want:
                    out["retain_q"] = self.retain_loss(self.model, retain, self.cfg, ref) * share
        return out


def _answer_tokens(batch: dict) -> int:
    """How many answer tokens a batch's token-mean losses average over."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())
