"""Sampler throughput: HF one prompt at a time, HF batched (HFSampler) and vLLM (VLLMSampler).

The same 16 chat prompts (8 code, 8 general), greedy, max 64 new tokens; useful tokens/s (up to
each answer's end-of-turn token). vLLM's engine start is timed apart and not counted; its row
is the median of 3 runs (one run takes seconds, so a single one is noisy).

Run: .venv/bin/python benchmarks/sampler_throughput.py [--model smollm2-135m]
     [--max-new-tokens 64] [--vllm-option enforce_eager=false ...] [--skip-hf]
vLLM needs .venv-vllm (`make setup-vllm`) or RR_VLLM_PYTHON; CPU settings such as
VLLM_CPU_OMP_THREADS_BIND or VLLM_CPU_KVCACHE_SPACE pass through the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from reveal_release.generation import GenerationStats, generate
from reveal_release.models import load_model
from reveal_release.reveal.samplers.base import SamplingConfig
from reveal_release.reveal.samplers.hf import HFSampler

PROMPTS = [
    "Write a Python function that reverses a string.",
    "Write a Python function that checks whether a number is prime.",
    "How do I read a CSV file with pandas?",
    "Write a SQL query that counts the rows of a table called users.",
    "Explain what a Python list comprehension is, with an example.",
    "Write a JavaScript function that returns the largest number in an array.",
    "How do I create a virtual environment in Python?",
    "Write a bash command that counts the lines of a file.",
    "What is the capital of France?",
    "Give me one tip for sleeping better.",
    "Explain photosynthesis in two sentences.",
    "Why is the sky blue?",
    "Name three primary colours.",
    "Write a haiku about autumn.",
    "What is the boiling point of water at sea level?",
    "Suggest a name for a friendly cat.",
]


def _option(text: str) -> tuple[str, object]:
    """Parse KEY=VALUE with a JSON value (true, 4, 0.5, "x"), else the plain string."""
    key, _, value = text.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _row(name: str, stats: GenerationStats) -> str:
    return f"{name:<28}{stats.new_tokens:>8}{stats.seconds:>10.2f}{stats.tokens_per_s:>10.1f}"


def main() -> None:
    """Print useful tokens/s for the three ways and the two ratios."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--vllm-option", action="append", default=[], type=_option)
    parser.add_argument("--vllm-repeats", type=int, default=3, help="vLLM runs; the median counts")
    parser.add_argument("--skip-hf", action="store_true", help="time only vLLM (for tuning)")
    args = parser.parse_args()
    cfg = SamplingConfig(
        max_new_tokens=args.max_new_tokens, temperature=0.0, batch_size=args.batch_size
    )
    loaded = load_model(args.model, device="cpu")
    load_before = os.getloadavg()[0]
    rows: dict[str, GenerationStats] = {}
    answers: dict[str, list[str]] = {}
    if not args.skip_hf:
        hf = HFSampler(loaded)
        hf.generate(PROMPTS[:2], SamplingConfig(max_new_tokens=8, temperature=0.0))  # warm-up
        one = [generate(loaded, [p], max_new_tokens=args.max_new_tokens)[1] for p in PROMPTS]
        rows["HF, one at a time"] = GenerationStats(
            len(PROMPTS), sum(s.new_tokens for s in one), sum(s.seconds for s in one)
        )
        gens, rows[f"HF, batch {args.batch_size}"] = hf.generate(PROMPTS, cfg)
        answers["hf"] = [g.text for g in gens]

    from reveal_release.reveal.samplers.vllm import VLLMSampler

    start = time.perf_counter()
    with VLLMSampler(loaded, **dict(args.vllm_option)) as vllm:
        start_seconds = time.perf_counter() - start
        vllm.generate(PROMPTS[:2], SamplingConfig(max_new_tokens=8, temperature=0.0))  # warm-up
        runs = [vllm.generate(PROMPTS, cfg) for _ in range(args.vllm_repeats)]
        runs.sort(key=lambda run: run[1].tokens_per_s)
        gens, rows["vLLM (VLLMSampler)"] = runs[len(runs) // 2]  # the median run
        answers["vllm"] = [g.text for g in gens]
        version, options, vllm_env = vllm.vllm_version, vllm.engine_options, vllm.engine_env

    print(
        f"model {args.model}, {len(PROMPTS)} prompts, greedy, max {args.max_new_tokens} new "
        f"tokens, {os.cpu_count()} CPU cores; vllm {version} {options}"
    )
    load_after = os.getloadavg()[0]
    print(f"load average before/after: {load_before:.2f}/{load_after:.2f} (other work skews it)")
    shown = {k: v for k, v in vllm_env.items() if k.startswith(("VLLM_CPU_", "VLLM_ENABLE_V1"))}
    if shown:
        print(f"vLLM settings: {shown}")
    print(f"vLLM engine start (not counted below): {start_seconds:.1f} s")
    print(f"{'way':<28}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}")
    for name, stats in rows.items():
        print(_row(name, stats))
    if args.skip_hf:
        return
    one_tps, batch_tps, vllm_tps = (s.tokens_per_s for s in rows.values())
    print(f"HF batched / one at a time: {batch_tps / one_tps:.2f}x (target >= 3x)")
    print(f"vLLM / HF batched:          {vllm_tps / batch_tps:.2f}x (target >= 1.5x)")
    same = sum(a == b for a, b in zip(answers["hf"], answers["vllm"], strict=True))
    print(f"greedy answers identical between HF and vLLM: {same}/{len(PROMPTS)}")


if __name__ == "__main__":
    main()
