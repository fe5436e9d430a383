"""The memory model's table (8B and 70B, full / LoRA / R2F, 1 and 8 GPUs), and its check against
the updates measured on this machine.

    .venv/bin/python benchmarks/memory_model.py
    .venv/bin/python benchmarks/memory_model.py --measured runs/cost/memory.json

Without --measured the check uses the figures of `benchmarks/r2f_update_cost.py --models
llama-1b,llama-1.5b,llama-2b --methods full,r2f --views-per-pass 1 --repeats 1 --memory-limit 23`
on 2 CPU cores (fp32, 4 x 128 tokens; README, R2F). With it, the rows of that benchmark's JSON.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from reveal_release.memory_model import GIB, LLAMA_8B, LLAMA_70B, Setting, Shape, update_bytes

GPU_GB = 80  # an H100's memory; the CUDA context and the allocator's slack take a few of it
# The benchmark's random-init sizes with the embedded model's tokenizer (49,152 tokens).
BENCH = {
    "llama-1b": Shape("llama-1b", 2048, 5632, 16, 32, 8, 49152),
    "llama-1.5b": Shape("llama-1.5b", 2048, 5632, 28, 32, 8, 49152),
    "llama-2b": Shape("llama-2b", 2560, 6912, 24, 20, 4, 49152),
}
# Peak RSS (GiB) measured on 2026-12-07 (README, R2F); None: out of memory under the 23 GiB cap.
MEASURED = {("llama-1b", "full"): 17.7, ("llama-1b", "r2f"): 12.2,
            ("llama-1.5b", "full"): None, ("llama-1.5b", "r2f"): 20.3,
            ("llama-2b", "full"): None, ("llama-2b", "r2f"): None}  # fmt: skip
CPU_RUN = Setting(tokens=128, elem=4, views_per_pass=1, runtime=1.0 * GIB)  # + torch and Python


def table(setting: Setting) -> list[dict]:
    """Rows of the memory model for 8B and 70B."""
    rows = []
    for shape in (LLAMA_8B, LLAMA_70B):
        for devices in (1, 8):
            for ckpt in (False, True):
                for method in ("full", "lora", "r2f"):
                    s = replace(setting, devices=devices, checkpointing=ckpt)
                    b = update_bytes(shape, method, s)
                    gb = {k: v / 1e9 for k, v in b.items()}
                    row = {"model": shape.name, "gpus": devices, "checkpointing": ckpt}
                    rows.append({**row, "method": method, **gb})
    return rows


def measured_figures(path: Path | None) -> dict:
    """(model, method) -> measured GiB (None: out of memory)."""
    if path is None:
        return MEASURED
    out, data = {}, json.loads(path.read_text())
    for r in data["results"] if isinstance(data, dict) else data:  # --json's file, or its rows
        peak = r.get("peak_bytes")
        out[(r["model"], r["method"])] = None if peak is None else peak / GIB
    return out


def main() -> None:
    """Print both tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measured", type=Path, help="r2f_update_cost.py's JSON")
    args = ap.parse_args()
    print("| model | GPUs (FSDP) | checkpointing | method | weights | gradients | optimiser "
          "| R2F originals | R2F inputs | activations | total GB | fits 80 GB |")  # fmt: skip
    print("|" + "---|" * 12)
    for r in table(Setting(runtime=2e9)):
        fits = "yes" if r["total"] <= GPU_GB else "no"
        parts = [r[k] for k in ("weights", "gradients", "optimiser")]
        parts += [r.get("originals", 0.0), r.get("inputs", 0.0), r["activations"], r["total"]]
        ckpt = "on" if r["checkpointing"] else "off"
        cells = [r["model"], str(r["gpus"]), ckpt, r["method"], *(f"{x:.1f}" for x in parts), fits]
        print("| " + " | ".join(cells) + " |")
    print("\n| model (CPU, fp32) | method | model GiB | measured GiB | model / measured |")
    print("|---|---|---|---|---|")
    for (name, method), got in measured_figures(args.measured).items():
        if name not in BENCH or method not in ("full", "lora", "r2f"):
            continue  # a size or method the model has no shape or rule for
        want = update_bytes(BENCH[name], method, CPU_RUN)["total"] / GIB
        seen = "out of memory (cap 23)" if got is None else f"{got:.1f}"
        ratio = "-" if got is None else f"{want / got:.2f}"
        print(f"| {name} | {method} | {want:.1f} | {seen} | {ratio} |")


if __name__ == "__main__":
    main()
