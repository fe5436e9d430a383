"""NeuralUCB against uniform random choice of reveal instructions: same budget, same seeds.

Both strategies run the same search (same pool, sampler, judge, mutation schedule); only the
choice of instructions differs. Reported: mean reward and relevance over the last half of
the steps, per seed and on average, and their ratio.

Run: .venv/bin/python benchmarks/reveal_bandit_vs_random.py [--target code] [--budget 96]
     [--seeds 0 1 2] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from reveal_release.models import load_model
from reveal_release.reveal.features import make_features
from reveal_release.reveal.samplers.hf import HFSampler
from reveal_release.reveal.search import InstructionSearch, SearchConfig
from reveal_release.reveal.stage import response_features
from reveal_release.targets.judges import make_judge
from reveal_release.targets.spec import instructions_dir, load_target, read_pool


def last_half(pulls: list, key: str) -> float:
    """Mean of a pull field over the last half of the steps."""
    steps = sorted({p.step for p in pulls})
    late = set(steps[len(steps) // 2 :])
    return float(np.mean([getattr(p, key) for p in pulls if p.step in late]))


def print_table(args: argparse.Namespace, rows: list[tuple]) -> None:
    """Each (seed, strategy) row, then the means and the NeuralUCB / random ratios."""
    print(
        f"\ntarget {args.target}, model {args.model}, budget {args.budget} responses, "
        f"seeds {args.seeds}, features {args.features}"
    )
    print(f"{'seed':<6}{'strategy':<11}{'reward':>8}{'relevance':>11}{'tok/s':>8}")
    for r in rows:
        print(f"{r[0]:<6}{r[1]:<11}{r[2]:>8.3f}{r[3]:>11.3f}{r[4]:>8.1f}")
    for col, what in ((2, "reward"), (3, "relevance")):
        ucb = np.mean([r[col] for r in rows if r[1] == "neuralucb"])
        rnd = np.mean([r[col] for r in rows if r[1] == "random"])
        print(
            f"mean {what}, last half of steps: neuralucb {ucb:.3f}, random {rnd:.3f}, "
            f"ratio {ucb / rnd:.2f}x"
        )


def main() -> None:
    """Run both strategies for each seed and print the table."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", default="code")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--budget", type=int, default=96)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--features", default="hidden")
    parser.add_argument(
        "--mixed",
        action="store_true",
        help="Pool = the target's reveal pool plus the retain pool (half the arms off target).",
    )
    args = parser.parse_args()

    loaded = load_model(args.model, device="cpu")
    spec = load_target(args.target)
    judge = make_judge(spec.judge, **spec.judge_params)
    meta = read_pool(instructions_dir() / "meta.txt", spec.subject, "meta")
    inst = make_features(args.features, loaded).instructions
    resp = response_features(loaded)
    sampler = HFSampler(loaded)
    pool = spec.reveal_pool + (spec.retain_pool if args.mixed else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for strategy in ("neuralucb", "random"):
                cfg = SearchConfig(
                    budget=args.budget, strategy=strategy, seed=seed,
                    max_new_tokens=args.max_new_tokens,
                )  # fmt: skip
                ckpt = Path(tmp) / f"{strategy}-{seed}.safetensors"
                res = InstructionSearch(
                    pool, sampler, judge.score, inst, resp, cfg, ckpt, meta_pool=meta
                ).run()
                reward, rel = last_half(res.pulls, "reward"), last_half(res.pulls, "relevance")
                rows.append((seed, strategy, reward, rel, res.tokens_per_s))
                print(f"seed {seed} {strategy:<9} reward(last half) {reward:.3f} "
                      f"relevance {rel:.3f}", flush=True)  # fmt: skip
    print_table(args, rows)


if __name__ == "__main__":
    main()
