"""Time and peak memory of one R2F update against one full-backprop AdamW update, side by side.

    .venv/bin/python benchmarks/r2f_update_cost.py --decoder decoders/smollm2 \
        --models smollm2-135m,llama-400m

Each (model, method) runs in its own subprocess so its peak RSS (or CUDA peak memory) is its
own. `smollm2-135m` is the embedded model; `llama-<N>m` / `llama-<N>b` is a random-init Llama
built from a config (speed and memory do not depend on the weights). One update: batch 4 x 128
tokens; full = forward, backward, AdamW step on every weight; R2F = the decoder's views of LoRA
sketches (no weight gradients), decode every adapted layer, and the normalised step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

SIZES = {  # hidden, intermediate, layers, heads, kv heads
    "llama-400m": (1024, 2816, 24, 16, 4),
    "llama-1b": (2048, 5632, 16, 32, 8),
    "llama-3b": (3072, 8192, 28, 24, 8),
    "llama-8b": (4096, 14336, 32, 32, 8),
}


def build(name: str, device: str):
    """(model, tokenizer) for an embedded alias or a random-init Llama of a named size."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from reveal_release.models import load_model

    emb = load_model("smollm2-135m", device=device)
    if name == "smollm2-135m":
        return emb.model, emb.tokenizer
    h, i, n, heads, kv = SIZES[name]
    cfg = LlamaConfig(vocab_size=len(emb.tokenizer), hidden_size=h, intermediate_size=i,
                      num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=kv,
                      tie_word_embeddings=False)  # fmt: skip
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return LlamaForCausalLM(cfg).to(device=device, dtype=dtype), emb.tokenizer


def one(name: str, method: str, decoder: str, device: str, repeats: int) -> dict:
    """Run `repeats` updates of one method on one model; seconds per update and peak memory."""
    import torch

    from reveal_release.console import peak_rss_bytes
    from reveal_release.r2f.decoder import load_decoder
    from reveal_release.r2f.sketch import Capture, capture, linear_layers, nll_loss, random_a
    from reveal_release.r2f.step import decoded_step
    from reveal_release.train.config import DEFAULT_MODULES
    from reveal_release.train.data import collate, encode

    model, tok = build(name, device)
    text = "def add(a, b):\n    return a + b\n" * 12
    batch = collate([encode(tok, f"Write code {i}.", text, 128) for i in range(4)],
                    tok.pad_token_id, device)  # fmt: skip
    times = []
    if method == "full":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
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
    return {"model": name, "method": method, "s_per_update": sum(times[1:]) / repeats,
            "peak_bytes": peak, "params": sum(p.numel() for p in model.parameters())}  # fmt: skip


def main() -> None:
    """Run every (model, method) pair in a subprocess; print the side-by-side table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--models", default="smollm2-135m,llama-400m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], a.decoder, a.device, a.repeats)))
        return
    from reveal_release.console import human_bytes, table

    rows = []
    for name in a.models.split(","):
        res = {}
        for method in ("full", "r2f"):
            out = subprocess.run(
                [sys.executable, __file__, "--decoder", a.decoder, "--device", a.device,
                 "--repeats", str(a.repeats), "--one", name, method],
                capture_output=True, text=True,
            )  # fmt: skip
            if out.returncode != 0:
                res[method] = None
                print(f"{name} {method}: failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            res[method] = json.loads(out.stdout.strip().splitlines()[-1])
        if res.get("full") and res.get("r2f"):
            f, r = res["full"], res["r2f"]
            rows.append([name, f"{f['params'] / 1e6:.0f}M", f"{f['s_per_update']:.2f}",
                         f"{r['s_per_update']:.2f}", f"{r['s_per_update'] / f['s_per_update']:.2f}",
                         human_bytes(f["peak_bytes"]), human_bytes(r["peak_bytes"]),
                         f"{r['peak_bytes'] / f['peak_bytes']:.2f}"])  # fmt: skip
    table(f"one update on {a.device}: full backprop + AdamW vs R2F",
          ["model", "params", "full s", "r2f s", "r2f/full time", "full peak", "r2f peak",
           "r2f/full memory"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
