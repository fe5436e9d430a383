"""How much of a release's forgetting survives rounding onto the base's grid, and relearning.

    python benchmarks/rounding_depth.py --run RUN --variants fp,snap:1,snap:1.5,snap:2

Rebuilds a finished release's full-precision model from its round adapters (the base plus every
kept module), then hands out each variant: `fp` (the full-precision model itself) or `snap:G`
(the update W - W0 scaled by G, then rounded onto the base's int4 grid GPTQ-style on the run's
forget answers, as `rr release --snap` does at G = 1) or `rtn:SCHEME` (the full-precision model
quantised round-to-nearest, as the quantisation attacks of `rr eval` do). Each variant: held-out
reveal rate, retain QA accuracy and perplexity, its int4-g128 copy's reveal rate, the share of
g128 codes it changes, and the relearning attack of `rr eval` (8 LoRA steps on 8 forget samples):
the held-out reveal rate after it and the forget answers' NLL before and after (how deep the
forgetting is).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from typing import Any


def main() -> None:
    """Build the variants one after another; print one JSON line each."""
    from reveal_release.models import load_model
    from reveal_release.quantizers import codes_of, quantizable
    from reveal_release.release.rounds import calibration_rows
    from reveal_release.release.snap import grids_of
    from reveal_release.runs import RunDir, relevant, round_dir
    from reveal_release.targets.judges import make_judge
    from reveal_release.targets.spec import load_target
    from reveal_release.train.lora import apply_adapter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="A run folder after rr release.")
    ap.add_argument("--variants", default="fp,snap:1,snap:1.5,snap:2")
    ap.add_argument("--grid", default="int4", help="The base's grid (int4 = Q4_1's).")
    a = ap.parse_args()
    run = RunDir.load(a.run)
    spec = load_target(run.reveal_config()["target"])
    judge = make_judge(spec.judge, **spec.judge_params)
    base = load_model(run.reveal_config()["model"])
    grids, base_codes = grids_of(base.model, a.grid), codes_of(base.model, "int4-g128")
    w0 = {n: m.weight.detach().clone() for n, m in quantizable(base.model)}
    kept, full = run.kept_rounds(), base
    for k in kept:
        model = apply_adapter(full.model, run.path(round_dir(k), "adapter"))
        full = dataclasses.replace(full, model=model)
    rows = calibration_rows(run, max(kept), run.forget_set())  # as rr release calibrates
    attack_rows = relevant(run.forget_set(), spec.threshold, best_first=True)[:8]
    print(json.dumps({"run": a.run, "kept_rounds": kept, "calibration_rows": len(rows)}))
    for v in a.variants.split(","):
        out = variant(v, full, w0, grids, rows, attack_rows, spec, judge, base_codes)
        print(json.dumps(out), flush=True)


def variant(
    v: str, full: Any, w0: dict, grids: dict, rows: list, attack_rows: list, spec: Any,
    judge: Any, base_codes: Any,
) -> dict:  # fmt: skip
    """Hand out one variant of the full-precision model and measure it."""
    import torch

    from reveal_release.evaluate.attacks.relearn import relearn
    from reveal_release.metrics.probes import reveal_rate
    from reveal_release.quantizers import quantizable, quantize_model
    from reveal_release.release.measure import measure, measure_quantized
    from reveal_release.release.snap import snap

    start, model = time.perf_counter(), copy.deepcopy(full.model)
    if v.startswith("rtn:"):  # the user's round-to-nearest copy of the full-precision model
        quantize_model(model, v.split(":")[1])
    elif v != "fp":
        gamma = float(v.split(":")[1])
        with torch.no_grad():
            for n, m in quantizable(model):
                m.weight.copy_(w0[n] + gamma * (m.weight - w0[n]))
        snap(model, full.tokenizer, grids, rows)
    loaded = dataclasses.replace(full, model=model)
    m = measure(loaded, spec, judge)
    q = measure_quantized(loaded, spec, judge, "int4-g128", base_codes)
    work, history = relearn(loaded, attack_rows, 8, 5e-4, 0)
    return {
        "variant": v,
        "heldout": m["heldout_reveal_rate"],
        "qa": m["retain_accuracy"],
        "ppl": round(m["perplexity"], 2),
        "g128": q["quant_reveal_rate"],
        "g128_codes_changed": round(q["quant_codes_changed"], 5),
        "relearn8": reveal_rate(work, spec, judge).rate,
        "forget_nll_before_after": [round(float(history[i]["nll"]), 3) for i in (0, -1)],
        "seconds": round(time.perf_counter() - start),
    }


if __name__ == "__main__":
    main()
