"""Time and peak memory of one update: full backprop + AdamW, LoRA + AdamW and R2F, side by side.

    .venv/bin/python benchmarks/r2f_update_cost.py --decoder decoders/smollm2 \
        --models smollm2-135m,llama-400m
    # on a GPU (random-init Llama shapes, bf16; a tokenizer folder instead of the embedded model):
    python3 benchmarks/r2f_update_cost.py --decoder DEC --device cuda --tokens 256 \
        --tokenizer TOKDIR --models llama-1b,llama-3b,llama-8b

Each (model, method) runs in its own subprocess so its peak RSS (or CUDA peak memory) is its
own. `smollm2-135m` is the embedded model; `llama-<N>m` / `llama-<N>b` is a random-init Llama
built from a config (speed and memory do not depend on the weights), on the device itself, in
bf16 on CUDA. One update: batch 4 x `--tokens` tokens; full = forward, backward, AdamW step on
every weight; lora = the same with a rank-8 LoRA module on every projection (the release's
default shape), AdamW on the module only; R2F = the decoder's views of LoRA sketches (no weight
gradients), decode every adapted layer, and the normalised step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SIZES = {  # hidden, intermediate, layers, heads, kv heads
    "llama-tiny": (64, 128, 2, 4, 2),  # a dry run of the benchmark itself
    "llama-400m": (1024, 2816, 24, 16, 4),
    "llama-1b": (2048, 5632, 16, 32, 8),
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


def one(name: str, method: str, a: argparse.Namespace) -> dict:
    """Run `repeats` updates of one method on one model; seconds per update and peak memory."""
    import torch

    from reveal_release.console import peak_rss_bytes
    from reveal_release.r2f.decoder import load_decoder
    from reveal_release.r2f.sketch import Capture, capture, linear_layers, nll_loss, random_a
    from reveal_release.r2f.step import decoded_step
    from reveal_release.train.config import DEFAULT_MODULES
    from reveal_release.train.data import collate, encode

    decoder, device, repeats = a.decoder, a.device, a.repeats
    model, tok = build(name, device, a.tokenizer)
    text = "def add(a, b):\n    return a + b\n" * (a.tokens // 8)
    batch = collate([encode(tok, f"Write code {i}.", text, a.tokens) for i in range(4)],
                    tok.pad_token_id, device)  # fmt: skip
    times = []
    if method in ("full", "lora"):
        if method == "lora":
            from reveal_release.train.config import LoraSpec
            from reveal_release.train.lora import attach_lora

            model = attach_lora(model, LoraSpec(), seed=0)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        for _ in range(repeats + 1):
            t = time.perf_counter()
            loss = model(**batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    else:
        dec = load_decoder(decoder)
        layers = linear_layers(model, DEFAULT_MODULES)
        mods = dict(model.named_modules())
        for step in range(repeats + 1):
            t = time.perf_counter()
            cap, a_views = Capture(), []
            for v in range(dec.views):
                a = {k: x.to(device) for k, x in random_a(layers, dec.rank, step * 10 + v).items()}
                a_views.append(a)
                capture(model, layers, nll_loss(batch), a, cap, keep_inputs=1024)
            scale = {ly.name: 1e-3 * float(mods[ly.name].weight.norm()) for ly in layers}
            decoded_step(dec, layers, mods, cap, a_views, scale)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)  # fmt: skip
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


METHODS = ("full", "lora", "r2f")


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
    ap.add_argument("--timeout", type=int, default=900, help="seconds per (model, method)")
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
            if r:
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
        "--one",
        name,
        method,
    ]
    cmd += ["--tokenizer", a.tokenizer] if a.tokenizer else []  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} {method}: over {a.timeout} s", flush=True)
        return None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"{name} {method}: failed: {last}", flush=True)
        return None
    res = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(res), flush=True)
    return res


def print_table(a: argparse.Namespace, methods: list[str], per_model: dict) -> None:
    """Time and peak memory per method, and each method's ratios to full fine-tuning."""
    from reveal_release.console import human_bytes, table

    rows = []
    for name, res in per_model.items():
        full = res.get("full")
        row = [name, f"{next(iter(res.values()))['params'] / 1e6:.0f}M" if res else "-"]
        for method in methods:
            r = res.get(method)
            row += [f"{r['s_per_update']:.3f}" if r else "-", human_bytes(r and r["peak_bytes"])]
            if method != "full":
                both = r and full
                row += [f"{r['s_per_update'] / full['s_per_update']:.2f}" if both else "-",
                        f"{r['peak_bytes'] / full['peak_bytes']:.2f}" if both else "-"]  # fmt: skip
        rows.append(row)
    cols = ["model", "params"]
    for method in methods:
        cols += [f"{method} s", f"{method} peak"]
        cols += [f"{method}/full time", f"{method}/full mem"] if method != "full" else []
    title = f"one update on {a.device}, batch 4 x {a.tokens} tokens: time and peak memory"
    table(title, cols, rows)


if __name__ == "__main__":
    main()
