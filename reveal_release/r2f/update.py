"""`rr release --update r2f`: each step is a decoded gradient, kept as the round's low-rank module.

Per step: LoRA gradient sketches of the round's loss (NPO on the forget answers, minus the
retain answers' log-likelihood) over the forget prompts' paraphrased views, a fresh random A
per view and no weight gradient; each adapted layer's full gradient decoded from them, its
components in earlier rounds' input subspaces removed, and a step of relative size --lr along
it. At the end of the round the change is truncated to rank r, saved as a PEFT module (alpha =
r, so s = 1) and the weights put back: the round loop merges the module as it does an O-LoRA
round, so both share the run format, resume (a killed R2F round restarts) and export.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.trainer import TrainResult
from reveal_release.release.updates import UPDATES, RoundInputs

PREFIX = "base_model.model."


def earlier_bases(earlier_a: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per layer, an orthonormal basis (d_in x m) of every earlier round's A rows."""
    import torch

    stacked: dict[str, list[Any]] = {}
    for round_a in earlier_a:
        for key, a in round_a.items():
            stacked.setdefault(key.removeprefix(PREFIX), []).append(a.float())
    return {k: torch.linalg.qr(torch.cat(v).T).Q for k, v in stacked.items()}


def low_rank(delta: Any, rank: int) -> tuple[Any, Any]:
    """(A, B) with B A the best rank-r approximation of delta (A: r x d_in, B: d_out x r)."""
    import torch

    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    r = min(rank, s.numel())
    return vh[:r].contiguous(), (u[:, :r] * s[:r]).contiguous()


def decoded_step(
    dec: Any,
    layers: Sequence[Any],
    mods: dict[str, Any],
    cap: Any,
    a_views: Sequence[dict[str, Any]],
    step_size: dict[str, float],
    protect: dict[str, Any] | None = None,
) -> list[float]:
    """Decode each layer's gradient from the views' sketches and step its weights by
    step_size[name] along it (earlier rounds' subspaces removed); the decoded norms."""
    import torch

    from reveal_release.r2f.decoder import input_basis

    norms = []
    with torch.no_grad():
        for ly in layers:
            g = dec.decode(
                ly.kind,
                ly.depth,
                cap.sketches[ly.name],
                [a[ly.name] for a in a_views],
                input_basis(cap.inputs[ly.name]),
            )
            q = (protect or {}).get(ly.name)
            if q is not None:  # no component in earlier rounds' subspaces
                g = g - (g @ q.to(g.device)) @ q.T.to(g.device)
            w, gn = mods[ly.name].weight, float(g.norm())
            if gn > 0:
                w -= (step_size[ly.name] / gn) * g.to(w.dtype)
            norms.append(gn)
    return norms


def seq_logp(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """(sum of answer-token log-probs, count) per sequence, gradients from the embeddings."""
    import torch

    from reveal_release.r2f.sketch import forward
    from reveal_release.release.data import IGNORE

    logits = forward(model, batch["input_ids"], batch["attention_mask"])[:, :-1].float()
    labels = batch["labels"][:, 1:]
    lp = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    mask = labels != IGNORE
    return (lp * mask).sum(-1), mask.sum(-1)


def _batch(tok: Any, pairs: Sequence[tuple[str, str]], cfg: ReleaseConfig, device: Any) -> dict:
    from reveal_release.release.data import collate, encode

    return collate([encode(tok, p, r, cfg.max_length) for p, r in pairs], tok.pad_token_id, device)


def round_loss(cfg: ReleaseConfig, forget: dict, ref: Any, retain: dict | None):
    """The step's loss as a function of the model: NPO on forget - a * retain log-likelihood."""
    import torch.nn.functional as F

    def loss_fn(model: Any, _batch: Any) -> Any:
        logp, _ = seq_logp(model, forget)
        loss = (2.0 / cfg.beta) * F.softplus(cfg.beta * (logp - ref)).mean()
        if retain is not None and cfg.retain_weight > 0:
            rl, rn = seq_logp(model, retain)
            loss = loss - cfg.retain_weight * (rl.sum() / rn.sum())
        return loss

    return loss_fn


def save_module(model: Any, deltas: dict[str, Any], cfg: ReleaseConfig, adapter_dir: Path) -> None:
    """Write the round's change, rank-r truncated, as a PEFT module with s = 1."""
    import dataclasses

    import torch

    from reveal_release.atomic import atomic_dir
    from reveal_release.release.lora import attach_lora, save_adapter, trainable

    peft_model = attach_lora(model, dataclasses.replace(cfg, alpha=float(cfg.rank)), seed=0)
    try:
        params = trainable(peft_model)
        with torch.no_grad():
            for name, delta in deltas.items():
                a, b = low_rank(delta, cfg.rank)
                params[f"{PREFIX}{name}.lora_A.default.weight"].copy_(a)
                params[f"{PREFIX}{name}.lora_B.default.weight"].copy_(b)
        with atomic_dir(adapter_dir) as tmp:
            save_adapter(peft_model, tmp)
    finally:
        peft_model.unload()


@UPDATES.register("r2f")
def r2f_update(inp: RoundInputs, adapter_dir: Path) -> TrainResult:
    """Decoded-gradient steps on the merged weights, saved as round k's rank-r module."""
    import torch

    from reveal_release.models import LoadedModel, stop_token_ids
    from reveal_release.r2f.decoder import load_decoder
    from reveal_release.r2f.fit import paraphrases
    from reveal_release.r2f.sketch import Capture, capture, linear_layers, random_a
    from reveal_release.release.data import batch_indices

    cfg, model, tok = inp.cfg, inp.model, inp.tokenizer
    if not cfg.extra.get("decoder"):
        raise RRError("--update r2f needs --decoder PATH (make one with `rr r2f fit`)")
    dec = load_decoder(Path(cfg.extra["decoder"]))
    layers = linear_layers(model, cfg.target_modules)
    for ly in layers:
        dec.params(ly.kind, ly.depth)  # a layer kind it has no mapping for: say which
    rows = [r for r in inp.forget if r.get("response", "").strip()]
    if not rows:
        raise RRError("the forget set has no usable answers: nothing to train on")
    start, device = time.perf_counter(), model.device
    loaded = LoadedModel(model, tok, None, Path("."), "", 0.0, stop_token_ids=stop_token_ids(tok))
    views = paraphrases(loaded, [r["prompt"] for r in rows], dec.views, cfg.seed + inp.round_)
    mods = dict(model.named_modules())
    original = {ly.name: mods[ly.name].weight.detach().clone() for ly in layers}
    protect = earlier_bases(inp.earlier_a)
    with torch.no_grad():
        ref = torch.tensor(
            [float(seq_logp(model, _batch(tok, [(r["prompt"], r["response"])], cfg, device))[0][0])
             for r in rows], device=device
        )  # fmt: skip
    history: list[dict] = []
    seed = cfg.seed * 131 + inp.round_
    try:
        for step in range(cfg.steps):
            idx = batch_indices(len(rows), cfg.batch_size, seed, step)
            retain = None
            if inp.retain:
                ri = batch_indices(len(inp.retain), cfg.batch_size, seed + 7, step)
                pairs = [(inp.retain[i]["prompt"], inp.retain[i]["response"]) for i in ri]
                retain = _batch(tok, pairs, cfg, device)
            cap, a_views, losses = Capture(), [], []
            for v in range(dec.views):
                forget = _batch(tok, [(views[i][v], rows[i]["response"]) for i in idx], cfg, device)
                a = random_a(
                    layers, dec.rank, (cfg.seed * 1009 + inp.round_) * 10_000 + step * 100 + v
                )
                a = {k: x.to(device) for k, x in a.items()}
                a_views.append(a)
                fn = round_loss(cfg, forget, ref[idx], retain)
                losses.append(capture(model, layers, forget, fn, a, cap, keep_inputs=2048))
            scale = {n: cfg.lr * float(w.norm()) for n, w in original.items()}
            norms = decoded_step(dec, layers, mods, cap, a_views, scale, protect)
            loss = sum(losses) / len(losses)
            entry = {
                "step": step + 1,
                "loss": loss,
                "forget": loss,
                "grad_norm": sum(norms) / len(norms),
            }
            history.append(entry)
            if inp.on_step:
                inp.on_step(step + 1, entry)
        deltas = {n: mods[n].weight.detach().float() - w.float() for n, w in original.items()}
    finally:
        with torch.no_grad():
            for name, w in original.items():
                mods[name].weight.copy_(w)
    save_module(model, deltas, cfg, adapter_dir)
    return TrainResult(steps=len(history), stopped=None, history=history,
                       seconds=time.perf_counter() - start, resumed_from=0)  # fmt: skip
