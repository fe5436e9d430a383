"""Time and peak memory of one update: full backprop + AdamW, LoRA + AdamW and R2F, side by side.

    .venv/bin/python benchmarks/r2f_update_cost.py --decoder decoders/smollm2 \
        --models smollm2-135m,llama-400m
    # on a GPU (random-init Llama shapes, bf16; a tokenizer folder instead of the embedded model):
    python3 benchmarks/r2f_update_cost.py --decoder DEC --device cuda --tokens 256 \
        --tokenizer TOKDIR --models llama-1b,llama-3b,llama-8b

Each (model, method) runs in its own subprocess so its peak RSS (or CUDA peak memory) is its
own. `smollm2-135m` is the embedded model; `llama-<N>m` / `llama-<N>b` is a random-init Llama
built from a config (speed and memory do not depend on the weights), on the device itself, in
bf16 on CUDA. One update, as a release step makes it: a forget batch and a retain batch, each
4 x `--tokens` tokens; full = forward, backward, AdamW step on every weight; lora = the same
with a rank-8 LoRA module on every projection (the release's default shape), AdamW on the module
only; r2f = LoRA sketches of the decoder's views of the forget batch (no weight gradients), the
views in one pass (or `--views-per-pass` at a time) and the retain batch once, then every
adapted layer decoded, preconditioned and stepped as the release's defaults do; r2f-per-view =
the same with one pass per view, each with the retain batch (how R2F steps ran before the
views were batched); r2f-projections = `--r2f-views projections`: the forget batch once, shared
by every view, each view its own random A.

The retain term is the release's (`--retain-loss`, kl by default): KL(base || model) over the
retain answers' next-token distributions. lora takes the base's with the module off, as a LoRA
round does; r2f keeps a copy of the adapted layers' original weights, as an R2F round does, and
swaps them in for that pass; full gets the base's distributions once before its updates (a
precomputed reference, the cheapest a full fine-tuning could do: no copy of the model). With
`--retain-loss nll` every method holds the retain answers' log-likelihood instead.

`--memory-limit GiB` caps each process's address space, so that a model whose update does not
fit fails with "out of memory" in the table instead of meeting the machine's OOM killer:

    .venv/bin/python benchmarks/r2f_update_cost.py --decoder decoders/smollm2 \
        --models llama-1b,llama-2b,llama-3b --methods full,r2f --views-per-pass 1 --repeats 1 \
        --memory-limit 23
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

SIZES = {  # hidden, intermediate, layers, heads, kv heads
    "llama-tiny": (64, 128, 2, 4, 2),  # a dry run of the benchmark itself
    "llama-400m": (1024, 2816, 24, 16, 4),
    "llama-1b": (2048, 5632, 16, 32, 8),
    "llama-1.5b": (2048, 5632, 28, 32, 8),
    "llama-2b": (2560, 6912, 24, 20, 4),
    "llama-3b": (3072, 8192, 28, 24, 8),
    "llama-8b": (4096, 14336, 32, 32, 8),
}


def build(name: str, device: str, tokenizer: str | None):
    """(model, tokenizer) for an embedded alias or a random-init Llama of a named size."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from reveal_release.models import load_model, prepare_tokenizer

    if name == "smollm2-135m":
        emb = load_model("smollm2-135m", device=device)
        return emb.model, emb.tokenizer
    if tokenizer:
        tok = prepare_tokenizer(AutoTokenizer.from_pretrained(tokenizer))
    else:
        tok = load_model("smollm2-135m", device="cpu").tokenizer
    h, i, n, heads, kv = SIZES[name]
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=h, intermediate_size=i,
                      num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=kv,
                      tie_word_embeddings=False)  # fmt: skip
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):  # built where it runs: no host copy of an 8B model
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model, tok


def backprop_times(model, method: str, batch: dict, retain: dict, a) -> tuple[object, list]:
    """full or lora: seconds of each of `repeats` + 1 AdamW updates (and the model trained)."""
    import torch

    from reveal_release.train.losses.base import RETAIN_LOSSES
    from reveal_release.train.losses.retain_kl import answer_log_probs

    kept, ref = RETAIN_LOSSES.get(a.retain_loss)(), None  # the release's retain term
    if method == "lora":  # its reference: the module off, every step (ref None)
        from reveal_release.train.config import LoraSpec
        from reveal_release.train.lora import attach_lora

        model = attach_lora(model, LoraSpec(), seed=0)
    elif a.retain_loss == "kl":
        with torch.no_grad():  # full: the base's distributions, taken once before training
            ref = answer_log_probs(model, retain)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times = []
    for _ in range(a.repeats + 1):
        t = time.perf_counter()
        loss = model(**batch).loss + kept(model, retain, None, ref)  # a forget and a retain batch
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return model, times


def r2f_times(model, method: str, batch: dict, retain: dict, a) -> list:
    """r2f, r2f-per-view or r2f-projections: seconds of each of `repeats` + 1 decoded
    updates."""
    import torch

    from reveal_release.r2f.decoder import load_decoder
    from reveal_release.r2f.sketch import Capture, capture_views, linear_layers, random_a
    from reveal_release.r2f.step import PRECONDITIONERS, decoded_step
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.updates.r2f import base_dists, round_loss, view_passes
    from reveal_release.train.config import DEFAULT_MODULES

    dec, device = load_decoder(a.decoder), a.device
    layers = linear_layers(model, DEFAULT_MODULES)
    mods = dict(model.named_modules())
    original = {ly.name: mods[ly.name].weight.detach().clone() for ly in layers}  # as a round
    cfg = SimpleNamespace(beta=0.1, retain_weight=1.0)
    default = ReleaseConfig()  # the release's default preconditioner and step
    make = PRECONDITIONERS.get(default.r2f_precondition)
    precondition = make(dec.rank) if make else None
    ref = torch.zeros(4 * dec.views, device=device)
    # r2f: as a release step runs now (views batched, the retain batch once); r2f-per-view:
    # as it ran before (one pass per view, each with the retain batch)
    per_pass = 1 if method == "r2f-per-view" else (a.views_per_pass or dec.views)
    passes = [None] if method == "r2f-projections" else view_passes(dec.views, per_pass)
    times = []
    for step in range(a.repeats + 1):
        t = time.perf_counter()
        a_views = [
            {k: x.to(device) for k, x in random_a(layers, dec.rank, step * 10 + v).items()}
            for v in range(dec.views)
        ]
        base = base_dists(model, mods, original, retain) if a.retain_loss == "kl" else None
        cap = Capture()
        for n, group in enumerate(passes):
            views = None if group is None else [v for v in group for _ in range(4)]
            fwd = batch if group is None else {k: x.repeat(len(group), 1) for k, x in batch.items()}
            shared = retain if n == 0 or method == "r2f-per-view" else None
            fn, _ = round_loss(cfg, fwd, views, ref[: len(fwd["input_ids"])], shared, base)
            capture_views(model, layers, fn, a_views, cap, keep_inputs=2048)
        scale = {n: default.r2f_step * float(w.norm()) for n, w in original.items()}
        decoded_step(dec, layers, mods, cap, a_views, scale, precondition=precondition)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times


def one(name: str, method: str, a: argparse.Namespace) -> dict:
    """Run `repeats` updates of one method on one model; seconds per update and peak memory."""
    import torch

    from reveal_release.console import peak_rss_bytes
    from reveal_release.train.data import collate, encode

    device, repeats = a.device, a.repeats
    model, tok = build(name, device, a.tokenizer)
    text = "def add(a, b):\n    return a + b\n" * (a.tokens // 8)
    batch = collate([encode(tok, f"Write code {i}.", text, a.tokens) for i in range(4)],
                    tok.pad_token_id, device)  # fmt: skip
    prose = "The river runs past the old mill and on to the sea. " * (a.tokens // 10)
    retain = collate([encode(tok, f"Tell a story {i}.", prose, a.tokens) for i in range(4)],
                     tok.pad_token_id, device)  # fmt: skip
    if method in ("full", "lora"):
        model, times = backprop_times(model, method, batch, retain, a)
    else:
        times = r2f_times(model, method, batch, retain, a)
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else peak_rss_bytes()
    params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    return {
        "model": name,
        "method": method,
        "s_per_update": sum(times[1:]) / repeats,
        "peak_bytes": peak,
        "params": params,
        "tokens": int(batch["attention_mask"].sum()),
    }


METHODS = ("full", "lora", "r2f", "r2f-per-view", "r2f-projections")


def main() -> None:
    """Run every (model, method) pair in a subprocess; print the side-by-side table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--models", default="smollm2-135m,llama-400m")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128, help="tokens per sequence (batch of 4)")
    ap.add_argument("--tokenizer", help="a tokenizer folder (default: the embedded model's)")
    ap.add_argument(
        "--retain-loss",
        choices=("kl", "nll"),
        default="kl",
        help="the retain term of every method, as --retain-loss in a release",
    )
    ap.add_argument("--timeout", type=int, default=900, help="seconds per (model, method)")
    ap.add_argument(
        "--views-per-pass",
        type=int,
        default=0,
        help="r2f: views in one forward/backward pass (0: all, as a release's default)",
    )
    ap.add_argument(
        "--memory-limit",
        type=float,
        default=0,
        help="GiB of address space each (model, method) process may use (0: none); "
        "over it, the run fails as out of memory instead of the machine's OOM killer",
    )
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], a)))
        return

    methods = a.methods.split(",")
    per_model, results = {}, []
    for name in a.models.split(","):
        per_model[name] = {}
        for method in methods:
            r = run_one(a, name, method)
            if r is not None:
                per_model[name][method] = r
                results.append(r)
    print_table(a, methods, per_model)
    if a.json:
        Path(a.json).write_text(json.dumps({"device": a.device, "results": results}, indent=1))


def run_one(a: argparse.Namespace, name: str, method: str) -> dict | None:
    """One (model, method) in its own process; its figures, or None (the reason printed)."""
    cmd = [
        sys.executable,
        __file__,
        "--decoder",
        a.decoder,
        "--device",
        a.device,
        "--repeats",
        str(a.repeats),
        "--tokens",
        str(a.tokens),
        "--views-per-pass",
        str(a.views_per_pass),
        "--retain-loss",
        a.retain_loss,
        "--one",
        name,
        method,
    ]
    cmd += ["--tokenizer", a.tokenizer] if a.tokenizer else []  # fmt: skip
    limit = int(a.memory_limit * 2**30)

    def cap_memory() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout,
                             preexec_fn=cap_memory if limit else None)  # fmt: skip
    except subprocess.TimeoutExpired:
        print(f"{name} {method}: over {a.timeout} s", flush=True)
        return None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        oom = "allocate memory" in out.stderr.lower() or "MemoryError" in out.stderr
        print(f"{name} {method}: {'out of memory' if oom else 'failed'}: {last}", flush=True)
        return {"model": name, "method": method, "failed": "out of memory" if oom else last}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(res), flush=True)
    return res


def print_table(a: argparse.Namespace, methods: list[str], per_model: dict) -> None:
    """One row per (model, method): time and peak memory, and their ratios to full
    fine-tuning's (a method that ran out of memory says so)."""
    from reveal_release.console import human_bytes, table

    rows = []
    for name, res in per_model.items():
        ran = [r for r in res.values() if "failed" not in r]
        params = f"{ran[0]['params'] / 1e6:.0f}M" if ran else "-"
        full = res.get("full")
        full = None if full is None or "failed" in full else full
        for method in methods:
            r = res.get(method)
            if r is None or "failed" in r:
                rows.append([name, params, method, r["failed"] if r else "not run", "-", "-", "-"])
                continue
            time_ratio = f"{r['s_per_update'] / full['s_per_update']:.2f}" if full else "-"
            mem_ratio = f"{r['peak_bytes'] / full['peak_bytes']:.2f}" if full else "-"
            rows.append([name, params, method, f"{r['s_per_update']:.3f}",
                         human_bytes(r["peak_bytes"]), time_ratio, mem_ratio])  # fmt: skip
    cols = ["model", "params", "method", "s / update", "peak memory", "time / full", "mem / full"]
    passes = f", r2f views per pass {a.views_per_pass or 'all'}, retain {a.retain_loss}"
    title = f"one update on {a.device}, batch 4 x {a.tokens} tokens + retain 4 x {a.tokens}{passes}"
    table(title, cols, rows)


if __name__ == "__main__":
    main()
