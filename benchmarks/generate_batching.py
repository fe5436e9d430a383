"""`rr generate` throughput: 8 prompts in one batch against one prompt at a time, same model.

Run: .venv/bin/python benchmarks/generate_batching.py [--model smollm2-135m] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import os

from reveal_release.generation import generate
from reveal_release.models import load_model

PROMPTS = [
    "What is the capital of France?",
    "Write a Python function that reverses a string.",
    "Give me one tip for sleeping better.",
    "Explain photosynthesis in two sentences.",
    "What is 17 times 3?",
    "Name three primary colours.",
    "Write a haiku about autumn.",
    "Why is the sky blue?",
]


def main() -> None:
    """Print useful tokens/s for both ways and their ratio."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    loaded = load_model(args.model, device="cpu")
    generate(loaded, PROMPTS[:2], max_new_tokens=8)  # warm-up
    _, batched = generate(loaded, PROMPTS, max_new_tokens=args.max_new_tokens, batch_size=8)
    one = [generate(loaded, [p], max_new_tokens=args.max_new_tokens)[1] for p in PROMPTS]
    one_tokens = sum(s.new_tokens for s in one)
    one_seconds = sum(s.seconds for s in one)
    print(
        f"model {args.model}, {len(PROMPTS)} prompts, max {args.max_new_tokens} new tokens, "
        f"{os.cpu_count()} CPU cores"
    )
    print(f"{'way':<22}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    print(
        f"{'one at a time':<22}{one_tokens:>8}{one_seconds:>10.2f}{one_tokens / one_seconds:>10.1f}"
    )
    print(
        f"{'batch of 8':<22}{batched.new_tokens:>8}{batched.seconds:>10.2f}"
        f"{batched.tokens_per_s:>10.1f}"
    )
    ratio = batched.tokens_per_s / (one_tokens / one_seconds)
    print(f"batched / one-at-a-time tokens/s: {ratio:.2f}x")


if __name__ == "__main__":
    main()
