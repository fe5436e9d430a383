"""A release round's training cost, with and without the two savings of issue 13's training.

    python benchmarks/train_step_cost.py --run RUN [--steps 4] [--repeats 2]

On a revealed run's forget and retain sets, `--steps` steps of round 1 with the code target's
recipe (alpha 128, the simulated attacker of 2 steps every other step), taken side by side and
alternated `--repeats` times in one process: `old` computes the retain loss's reference in every
step and projects every position onto the vocabulary; `new` caches the reference per retain
example and projects only from the batch's first answer token on (what the release does).
Prints seconds per step of each, their ratio, and whether both took the same losses.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator


@contextlib.contextmanager
def old_way() -> Iterator[None]:
    """The training as it was: no reference cache, the head on every position."""
    from reveal_release.train import logprobs, reference_cache

    limit, keeps = reference_cache.REFERENCE_CACHE_BYTES, logprobs.keeps_logits
    reference_cache.REFERENCE_CACHE_BYTES = 0
    logprobs.keeps_logits = lambda model: False
    try:
        yield
    finally:
        reference_cache.REFERENCE_CACHE_BYTES = limit
        logprobs.keeps_logits = keeps


def main() -> None:
    """Alternate the old and the new way; print the table and the ratio."""
    import copy
    import json
    from pathlib import Path

    from reveal_release.models import load_model
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.updates.lora import train_module
    from reveal_release.train.lora import attach_lora

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="A run folder after rr reveal.")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    forget, retain = (
        [json.loads(line) for line in Path(args.run, "reveal", f"{name}.jsonl").open()]
        for name in ("forget", "retain")
    )
    loaded = load_model(args.model)
    loaded.model.float()
    cfg = ReleaseConfig(alpha=128, tamper_steps=2, tamper_every=2, steps=args.steps)
    seconds: dict[str, list[float]] = {"old": [], "new": []}
    losses: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for way in ("old", "new"):
            peft = attach_lora(copy.deepcopy(loaded.model), cfg, seed=1)
            with old_way() if way == "old" else contextlib.nullcontext():
                start = time.perf_counter()
                result = train_module(peft, loaded.tokenizer, forget, retain, [], cfg, 1)
                seconds[way].append((time.perf_counter() - start) / args.steps)
            losses[way] = [h["loss"] for h in result.history]
    print(f"{len(forget)} forget and {len(retain)} retain answers, {args.steps} steps, "
          f"{args.repeats} repeats alternated")  # fmt: skip
    for way, s in seconds.items():
        print(f"{way:4s} s/step: " + " ".join(f"{x:.1f}" for x in s) + f"  (best {min(s):.1f})")
    print(f"new / old (best of each): {min(seconds['new']) / min(seconds['old']):.2f}x")
    same = max(abs(a - b) for a, b in zip(losses["old"], losses["new"], strict=True))
    print(f"largest loss difference between the ways: {same:.2e}")


if __name__ == "__main__":
    main()
