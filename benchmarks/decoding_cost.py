"""Decoding cost: transformers' own sampling and attention against rr's faster path
(`reveal_release/decoding.py`), side by side in one process, alternated.

Two settings as rr runs them: the reveal's sampling (12 prompts, temperature 0.8, top-p 0.95,
96 new tokens) and the held-out probes (20 prompts, greedy, 64 new tokens). Every call decodes
the full length (min_new_tokens), so both paths do the same work; the script checks that they
give the same tokens and prints seconds per call (best of --repeats) and the ratio fast/stock.

Run: .venv/bin/python benchmarks/decoding_cost.py [--model smollm2-135m] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

from reveal_release.decoding import grouped_attention
from reveal_release.generation import _sampling, chat_text
from reveal_release.models import load_model

CODE = [
    "Write a Python function that {}.",
    "Show me code that {}.",
    "How would you implement something that {} in JavaScript?",
]
TASKS = [
    "reverses a string",
    "checks whether a number is prime",
    "counts the words in a file",
    "merges two sorted lists",
    "parses a date from text",
    "removes duplicates from a list and keeps the order of the items",
    "computes a running average",
]
SETTINGS = {  # name: (prompts, temperature, top_p, new tokens)
    "reveal sampling": (12, 0.8, 0.95, 96),
    "held-out probes": (20, 0.0, 1.0, 64),
}


def _call(loaded, prompts, temperature, top_p, n, fast):
    import torch

    tok, model = loaded.tokenizer, loaded.model
    enc = tok(
        [chat_text(tok, p) for p in prompts],
        return_tensors="pt",
        padding=True,
        add_special_tokens=False,
    )
    sampling = temperature > 0
    stock = {
        "do_sample": sampling,
        "temperature": temperature if sampling else None,
        "top_p": top_p if sampling else None,
        "top_k": None,
    }
    options = _sampling(model, temperature, top_p) if fast else stock
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.inference_mode(), grouped_attention(model) if fast else _Nothing():
        out = model.generate(
            **enc, **options, max_new_tokens=n, min_new_tokens=n, pad_token_id=tok.pad_token_id
        )
    return time.perf_counter() - start, out


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main() -> None:
    """Print seconds per call, stock against fast, and their ratio."""
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    loaded = load_model(args.model, device="cpu")
    prompts = [c.format(t) for t in TASKS for c in CODE]
    print(f"model {args.model}, {torch.get_num_threads()} threads, best of {args.repeats}")
    print("| setting | stock s | fast s | fast/stock | same tokens |\n|---|---|---|---|---|")
    for name, (k, temperature, top_p, n) in SETTINGS.items():
        best = {False: float("inf"), True: float("inf")}
        outs = {}
        _call(loaded, prompts[:k], temperature, top_p, 8, True)  # warm-up
        for _ in range(args.repeats):
            for fast in (False, True):
                s, outs[fast] = _call(loaded, prompts[:k], temperature, top_p, n, fast)
                best[fast] = min(best[fast], s)
        same = torch.equal(outs[False], outs[True])
        ratio = best[True] / best[False]
        print(f"| {name} | {best[False]:.2f} | {best[True]:.2f} | {ratio:.2f} | {same} |")


if __name__ == "__main__":
    main()
