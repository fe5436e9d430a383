"""`--update r2f`: each step is a decoded gradient, kept as the round's low-rank module.

Per step: LoRA gradient sketches of the round's loss (the forget loss of --loss, NPO by default,
on the forget answers, plus the retain term: KL from the base model's next-token distributions
on the retain answers, or with --retain-loss nll minus their log-likelihood; with --tamper-steps
the forget loss of other answers after a simulated relearning attack too) over the forget
prompts' paraphrased views, a fresh random A per view and no weight gradient; each adapted
layer's full gradient decoded from them, its components in earlier rounds' input subspaces
removed, and a step of relative size --r2f-step along it. A paired loss (generic-dpo) runs its
chosen answers under the same views in the same pass. With --r2f-views projections the views are
the forget prompts themselves in one pass, each view a fresh A of that one gradient. At the end
of the round the change is truncated to rank r, saved as a PEFT module (alpha = r, so s = 1) and
the weights put back: the round loop merges the module as it does an O-LoRA round, so both share
the run format, resume (a killed R2F round restarts) and export.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reveal_release.atomic import atomic_dir
from reveal_release.errors import RRError
from reveal_release.release.updates.base import UPDATES, RoundInputs
from reveal_release.train import seeds
from reveal_release.train.adversary import ATTACKER_LORA, RelearnAdversary
from reveal_release.train.config import LoraSpec
from reveal_release.train.data import batch_indices, collate, encode, other_indices
from reveal_release.train.logprobs import (
    answer_nll,
    answer_start,
    sequence_logps,
    sequence_logps_from_logits,
)
from reveal_release.train.loop import TrainResult, converged
from reveal_release.train.lora import module_name, write_module
from reveal_release.train.losses.base import FORGET_LOSSES, ForgetLoss
from reveal_release.train.losses.retain_kl import answer_dists, answer_log_probs


def _batch(tok: Any, pairs: Sequence[tuple[str, str]], max_length: int, device: Any) -> dict:
    return collate([encode(tok, p, r, max_length) for p, r in pairs], tok.pad_token_id, device)


def _logps(forward: Any, batch: dict, views: Sequence[int] | None) -> tuple[Any, Any]:
    """Answer log-probs of a batch run through `forward`, the head only from the first answer
    token on."""
    lab = batch["labels"]
    keep = lab.shape[1] - answer_start(lab)
    logits = forward(batch["input_ids"], batch["attention_mask"], views, keep)
    return sequence_logps_from_logits(logits, lab[:, lab.shape[1] - logits.shape[1] :])


def _retain_term(cfg: Any, forward: Any, retain: dict, retain_ref: Any, report: dict) -> Any:
    """a * the retain term, also put in report["retain"]: KL(base || model) over the retain
    answers' next-token distributions (--retain-loss kl, with the base's in `retain_ref`), or
    minus their mean log-likelihood (nll)."""
    import torch.nn.functional as F

    if retain_ref is not None:
        lab = retain["labels"]
        logits = forward(retain["input_ids"], retain["attention_mask"], None,
                         lab.shape[1] - answer_start(lab))  # fmt: skip
        kl = F.kl_div(answer_dists(logits, lab), retain_ref, log_target=True,
                      reduction="batchmean")  # fmt: skip
        report["retain"] = cfg.retain_weight * float(kl.detach())
        return cfg.retain_weight * kl
    rl, rn = _logps(forward, retain, None)
    mean = rl.sum() / rn.sum()
    report["retain_nll"] = -float(mean.detach())
    report["retain"] = -cfg.retain_weight * float(mean.detach())
    return -cfg.retain_weight * mean


def view_terms(
    loss: ForgetLoss, cfg: Any, logp: Any, n: Any, ref: Any, views: Sequence[int] | None,
    paired: bool,
) -> list[Any]:  # fmt: skip
    """The forget loss of each view's rows (their own mean), in view order (views None: one
    term, the rows shared by every view). A paired batch holds the rejected rows and then the
    chosen ones, tagged with the same views."""
    import torch

    views = [0] * len(logp) if views is None else views
    at = torch.tensor(views, device=logp.device)
    half = len(views) // 2 if paired else len(views)
    first = torch.arange(len(views), device=logp.device) < half
    out = []
    for v in sorted(set(views)):
        rej = (at == v) & first
        if paired:
            cho = (at == v) & ~first
            out.append(loss((logp[rej], logp[cho]), n[rej], (ref[rej], ref[cho]), cfg))
        else:
            out.append(loss(logp[rej], n[rej], ref[rej], cfg))
    return out


def round_loss(
    cfg: Any, forget: dict, views: Sequence[int] | None, ref: Any, retain: dict | None,
    retain_ref: Any = None, loss: ForgetLoss | None = None, paired: bool = False,
    attacked: Any = None,
) -> tuple[Any, Any]:  # fmt: skip
    """The pass's loss as a function of `forward`, and the mean per-view loss it reports.

    For each view v of the forget batch, the forget loss (`loss`, NPO unless given) on its rows,
    summed over views, plus a * the retain term (rows shared by every view): view v's sketch is
    then that of L_v + a * retain, the loss of one view. With views None the forget rows are
    shared by every view too (one term). `attacked(forward)`, the tamper term (--tamper-steps),
    is shared by every view as the retain term is.
    """
    report: dict[str, float] = {}
    loss = loss or FORGET_LOSSES.get("npo")()

    def loss_fn(forward: Any) -> Any:
        import torch

        logp, n = _logps(forward, forget, views)
        per_view = view_terms(loss, cfg, logp, n, ref, views, paired)
        total = torch.stack(per_view).sum()
        report["forget"] = float(total.detach()) / len(per_view)
        report["retain"] = 0.0
        if retain is not None:
            total = total + _retain_term(cfg, forward, retain, retain_ref, report)
        if attacked is not None:
            term = attacked(forward)
            report["forget_t"] = float(term.detach())
            total = total + term
        return total

    return loss_fn, report


@dataclass
class _Round:
    """What every step of an R2F round shares."""

    inp: RoundInputs
    dec: Any
    layers: list
    loss: ForgetLoss
    rows: list[dict]
    chosen: list[dict] | None  # a paired loss's preferred answer to each row
    views: list[list[str]] | None  # each row's prompt per view (None: --r2f-views projections)
    ref: Any  # the rows' reference log-probs, then the chosen answers' (paired)
    mods: dict[str, Any]
    original: dict[str, Any]
    protect: dict[str, Any]
    heading: Any  # r2f.step.Momentum
    precondition: Any  # one of r2f.step.PRECONDITIONERS, or None
    adversary: Any  # train.adversary.RelearnAdversary with --tamper-steps, else None


def _prepare(inp: RoundInputs) -> _Round:
    """Decoder, layers, the forget rows with their views and reference log-probs."""
    import torch

    from reveal_release.models import LoadedModel
    from reveal_release.r2f.decoder import load_decoder
    from reveal_release.r2f.null_space import joined
    from reveal_release.r2f.paraphrase import paraphrases
    from reveal_release.r2f.sketch import linear_layers
    from reveal_release.r2f.step import PRECONDITIONERS, Momentum, earlier_bases

    cfg, model, tok = inp.cfg, inp.model, inp.tokenizer
    dec = load_decoder(Path(cfg.decoder))
    layers = linear_layers(model, cfg.target_modules)
    for ly in layers:
        dec.params(ly.kind, ly.depth)  # a layer kind it has no mapping for: say which
    loss = FORGET_LOSSES.get(cfg.loss)()
    usable = [r for r in inp.forget if r.get("response", "").strip()]
    rows, chosen = loss.training_rows(usable), loss.chosen_rows(usable)
    if not rows:
        raise RRError("the forget set has no usable answers: nothing to train on")
    if chosen is not None and len(chosen) != len(rows):
        raise RRError(f"--loss {cfg.loss}: its chosen answers do not pair with its rows")
    seed = seeds.round_reveal(cfg.seed, inp.round_)
    views = None
    if cfg.r2f_views == "paraphrases":
        prompts = [r["prompt"] for r in rows]
        views = paraphrases(LoadedModel.bare(model, tok), prompts, dec.views, seed)
    mods = dict(model.named_modules())
    scored = rows + (chosen or [])
    ref = (_reference(model, tok, scored, cfg.max_length) if loss.needs_reference
           else torch.zeros(len(scored), device=model.device))  # fmt: skip
    original = {ly.name: mods[ly.name].weight.detach().clone() for ly in layers}
    protect = earlier_bases(inp.earlier_a, module_name)
    if cfg.r2f_null_space and inp.retain:
        protect = joined(protect, _retain_null_space(inp, layers))
    heading = Momentum(cfg.r2f_momentum)
    make = PRECONDITIONERS.get(cfg.r2f_precondition)
    precondition = make(cfg.rank) if make else None
    adversary = None
    if cfg.tamper_steps:
        adversary = RelearnAdversary([mods[ly.name] for ly in layers], ATTACKER_LORA,
                                     cfg.tamper_lr, cfg.tamper_steps,
                                     seeds.lora_init(cfg.seed, inp.round_))  # fmt: skip
    return _Round(
        inp, dec, layers, loss, rows, chosen, views, ref, mods, original, protect, heading,
        precondition, adversary,
    )  # fmt: skip


def _retain_null_space(inp: RoundInputs, layers: list) -> dict[str, Any]:
    """--r2f-null-space: per layer, the input directions carrying that share of the retain
    answers' input energy under the round's starting weights, which every step leaves alone."""
    from reveal_release.r2f.null_space import retain_bases

    cfg, tok = inp.cfg, inp.tokenizer
    pairs = [(r["prompt"], r["response"]) for r in inp.retain]
    size = max(cfg.batch_size, 1)
    batches = (_batch(tok, pairs[i : i + size], cfg.max_length, inp.model.device)
               for i in range(0, len(pairs), size))  # fmt: skip
    return retain_bases(inp.model, layers, batches, cfg.r2f_null_space)


def _reference(model: Any, tok: Any, rows: Sequence[dict], max_length: int) -> Any:
    """Each row's answer log-prob under the round's starting weights, one row at a time."""
    import torch

    with torch.no_grad():
        return torch.tensor(
            [float(sequence_logps(model, _batch(tok, [(r["prompt"], r["response"])], max_length,
                                                model.device))[0][0]) for r in rows],
            device=model.device,
        )  # fmt: skip


def view_passes(views: int, per_pass: int) -> list[list[int]]:
    """The views in groups of `per_pass` (0: all in one pass)."""
    per_pass = per_pass or views
    return [list(range(lo, min(lo + per_pass, views))) for lo in range(0, views, per_pass)]


def _step(r: _Round, step: int) -> dict:
    """One decoded-gradient step on the weights; the history entry.

    The views of the forget batch run together (in passes of --r2f-views-per-pass), and the
    retain batch once, in the first pass, for all of them: its sketch for each view uses
    that view's A (one stacked product). With --r2f-views projections the forget batch is
    shared by every view the same way, in one pass.
    """
    from reveal_release.r2f.sketch import Capture, capture_views, random_a
    from reveal_release.r2f.step import decoded_step

    inp, cfg, tok, device = r.inp, r.inp.cfg, r.inp.tokenizer, r.inp.model.device
    idx = batch_indices(len(r.rows), cfg.batch_size, seeds.batch_stream(cfg.seed, inp.round_), step)
    retain = None
    if inp.retain:
        stream = seeds.batch_stream(cfg.seed, inp.round_, "retain")
        ri = batch_indices(len(inp.retain), cfg.batch_size, stream, step)
        pairs = [(inp.retain[i]["prompt"], inp.retain[i]["response"]) for i in ri]
        retain = _batch(tok, pairs, cfg.max_length, device)
    a_views = []
    for v in range(r.dec.views):
        a = random_a(r.layers, r.dec.rank, seeds.sketch_view(cfg.seed, inp.round_, step, v))
        a_views.append({k: x.to(device) for k, x in a.items()})
    trained = retain if cfg.retain_weight > 0 else None  # in the loss only when it counts
    kl = trained is not None and cfg.retain_loss == "kl"
    retain_ref = base_dists(inp.model, r.mods, r.original, trained) if kl else None
    attacked, extra = _attacked_term(r, idx, step), {}
    cap, forget_loss, rest, before = Capture(), 0.0, 0.0, None
    passes = [None] if r.views is None else view_passes(r.dec.views, cfg.r2f_views_per_pass)
    for n, group in enumerate(passes):
        forget, views, ref = _forget_batch(r, idx, group)
        first = n == 0  # the shared terms (retain, tamper) ride on the first pass
        fn, report = round_loss(
            cfg, forget, views, ref, trained if first else None, retain_ref, r.loss,
            r.chosen is not None, attacked if first else None,
        )  # fmt: skip
        capture_views(inp.model, r.layers, fn, a_views, cap, keep_inputs=2048)
        forget_loss += report["forget"] * (1 if group is None else len(group) / r.dec.views)
        rest += report["retain"] + report.get("forget_t", 0.0)  # the terms besides the forget loss
        if "forget_t" in report:
            extra["forget_t"] = report["forget_t"]
        before = report.get("retain_nll", before)
    scale = {n: cfg.r2f_step * float(w.norm()) for n, w in r.original.items()}
    applied: dict[str, Any] | None = None
    if cfg.r2f_retain_guard and retain is not None:
        applied = {}
        before = _retain_nll(inp.model, retain) if before is None else before
    norms = decoded_step(
        r.dec, r.layers, r.mods, cap, a_views, scale, r.protect, applied,
        heading=r.heading, precondition=r.precondition,
    )  # fmt: skip
    entry = {"step": step + 1, "loss": forget_loss + rest, "forget": forget_loss,
             "grad_norm": sum(norms) / len(norms), **extra}  # fmt: skip
    if applied is not None:
        entry["step_kept"] = _guard(r, retain, before, applied)
    return entry


def _forget_batch(
    r: _Round, idx: Sequence[int], group: Sequence[int] | None
) -> tuple[dict, list | None, Any]:
    """Rows `idx` under each view of `group` (then their chosen answers under the same views,
    for a paired loss): the batch, each row's view and its reference log-prob. group None: the
    rows with their own prompts, shared by every view (views None)."""
    import torch

    cfg, answers = r.inp.cfg, [r.rows]
    if r.chosen is not None:
        answers.append(r.chosen)
    at = torch.tensor(list(idx), device=r.ref.device)
    if group is None:
        pairs = [(r.rows[i]["prompt"], rows[i]["response"]) for rows in answers for i in idx]
        views, times = None, 1
    else:
        pairs = [(r.views[i][v], a[i]["response"]) for a in answers for v in group for i in idx]
        views, times = [v for _ in answers for v in group for _ in idx], len(group)
    ref = torch.cat([r.ref[at + k * len(r.rows)].repeat(times) for k in range(len(answers))])
    return _batch(r.inp.tokenizer, pairs, cfg.max_length, r.inp.model.device), views, ref


def _attacked_term(r: _Round, idx: Sequence[int], step: int) -> Any:
    """--tamper-steps, on an attacked step (--tamper-every): a fresh attacker trained on the
    step's forget answers (their NLL, own prompts), and the tamper term as a function of
    `forward`: --tamper-weight x the forget loss (beta --tamper-beta) of other forget answers
    with the attacker on, their rows shared by every view. None on other steps."""
    import dataclasses

    cfg, model = r.inp.cfg, r.inp.model
    if r.adversary is None or step % cfg.tamper_every:
        return None
    pairs = [(r.rows[i]["prompt"], r.rows[i]["response"]) for i in idx]
    own = _batch(r.inp.tokenizer, pairs, cfg.max_length, model.device)
    r.adversary.attack(lambda: answer_nll(model, own), step)
    stream = seeds.batch_stream(cfg.seed, r.inp.round_) + 1  # as a LoRA round draws them
    others = other_indices(len(r.rows), set(idx), cfg.batch_size, stream, step) or list(idx)
    forget, _, ref = _forget_batch(r, others, None)
    attacked_cfg = dataclasses.replace(cfg, beta=cfg.tamper_beta or cfg.beta)

    def term(forward: Any) -> Any:
        with r.adversary.active():
            logp, n = _logps(forward, forget, None)
        (loss,) = view_terms(r.loss, attacked_cfg, logp, n, ref, None, r.chosen is not None)
        return cfg.tamper_weight * loss

    return term


def base_dists(model: Any, mods: dict[str, Any], original: dict[str, Any], batch: dict) -> Any:
    """The base model's answer_dists on `batch`: each adapted layer's weight (in `mods`) swaps
    its storage with its copy in `original` for one forward pass, and back (no copy is made)."""
    import torch

    def swap() -> None:
        for n, w in original.items():
            p = mods[n].weight
            p.data, original[n] = w, p.data

    with torch.no_grad():
        swap()
        try:
            return answer_log_probs(model, batch)
        finally:
            swap()


def _retain_nll(model: Any, retain: dict) -> float:
    """The retain batch's mean answer-token NLL under the current weights."""
    import torch

    with torch.no_grad():
        logp, n = sequence_logps(model, retain)
    return -float(logp.sum() / n.sum())


GUARD_HALVINGS = 4  # the smallest step the guard keeps: 1/16 of --r2f-step's


def _guard(r: _Round, retain: dict, before: float, applied: dict[str, Any]) -> float:
    """--r2f-retain-guard: halve the step just taken while it raised the retain batch's answer
    NLL by more than the guard (at most GUARD_HALVINGS times); the share of the step kept."""
    import torch

    kept = 1.0
    for _ in range(GUARD_HALVINGS):
        if _retain_nll(r.inp.model, retain) - before <= r.inp.cfg.r2f_retain_guard:
            break
        kept /= 2
        with torch.no_grad():
            for name, change in applied.items():
                r.mods[name].weight -= kept * change
    return kept


@UPDATES.register("r2f")
def r2f_update(inp: RoundInputs, adapter_dir: Path) -> TrainResult:
    """Decoded-gradient steps on the merged weights, saved as round k's rank-r module."""
    import torch

    from reveal_release.r2f.step import low_rank

    start = time.perf_counter()
    r = _prepare(inp)
    history: list[dict] = []
    try:
        for step in range(inp.cfg.steps):
            history.append(_step(r, step))
            if inp.on_step:
                inp.on_step(step + 1, history[-1])
            if r.loss.bounded and converged(history, inp.cfg):  # --converge, as a LoRA round
                break
        deltas = {n: r.mods[n].weight.detach().float() - w.float() for n, w in r.original.items()}
    finally:
        with torch.no_grad():
            for name, w in r.original.items():
                r.mods[name].weight.copy_(w)
    rank = inp.cfg.rank
    spec = LoraSpec(rank=rank, alpha=float(rank), target_modules=inp.cfg.target_modules)
    with atomic_dir(adapter_dir) as tmp:
        write_module(inp.model, spec, {n: low_rank(d, rank) for n, d in deltas.items()}, tmp)
    return TrainResult(len(history), None, history, time.perf_counter() - start, 0)
