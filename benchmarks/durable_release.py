"""Durable forgetting: release variants from one reveal, each attacked the same way, one table.

    python benchmarks/durable_release.py --reveal runs/code96 --out runs/durable/code
    python benchmarks/durable_release.py --reveal runs/hp --out runs/durable/hp --variants plain,new

Each variant is a real `rr release` in its own copy of the reveal run, then a real `rr eval`
with the durability attacks (int4 in groups of 32 and 128, symmetric int4, int8, relearning
on 8 forget samples for 8 and 32 steps and on unrelated text for 32 steps) and no GA baseline.
The base model's figures are computed once (the first variant's eval cache seeds the others').
Rows: held-out reveal rate of the released model and of each attacked copy, retain accuracy
and perplexity over the base's, the int4-g128 copy's retain accuracy over the base's, and the
mean time per round, measured one variant after another on the same machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Every option a built-in target spec sets ([settings.release]), given at the global default,
# so that no spec applies and each variant is the same on every target.
PLAIN_TRAIN = [
    "--steps", "16", "--loss", "npo", "--beta", "0.1", "--retain-weight", "1",
    "--max-epochs", "0", "--shrink", "0", "--tamper-lr", "0.002",
]  # fmt: skip
# The training of the defaults before this tamper-resistant rounds.
OLD = ["--tamper-steps", "0", "--alpha", "32", "--snap-gain", "1", *PLAIN_TRAIN]
TODAY = [*OLD, "--qat", "none", "--sam-rho", "0", "--stop-quant", "none", "--snap", "none"]
FP = [*OLD, "--snap", "none"]  # the variants below change training alone: no grid rounding
# Tamper-resistant rounds (a simulated relearning attacker in training) with a larger update
# (alpha 128), scaled 1.5x before it is rounded onto the base's grid.
TAMPER = ["--alpha", "128", "--tamper-steps", "2", "--snap-gain", "1.5", *PLAIN_TRAIN]
VARIANTS = {
    "plain": ("plain release (the defaults before durability)", TODAY),
    "qat": ("quantisation-aware (int4)", ["--qat", "int4", *FP]),
    "sam": ("SAM on the forget loss (rho 0.05)", ["--sam-rho", "0.05", *FP]),
    "both": ("quantisation-aware + SAM", ["--qat", "int4", "--sam-rho", "0.05", *FP]),
    "alt": ("larger alpha/r and lr (arXiv 2602.13151)", [*FP, "--alpha", "128", "--lr", "2e-3"]),
    "new": ("the defaults with the target spec's settings", []),
    "tamper": ("tamper-resistant, larger update, rounded at gain 1.5", TAMPER),
    # MUDMAN (Sondej et al. 2025, arXiv 2506.12484): disruption masking with a simulated
    # attacker, the retain loss a cross-entropy whose gradient sign the mask follows.
    "mudman": (
        "disruption masking + simulated attacker (MUDMAN, arXiv 2506.12484)",
        [*TAMPER, "--mask", "disruption", "--retain-loss", "nll"],
    ),
    "new-sam": ("the defaults + SAM (rho 0.05)", ["--sam-rho", "0.05"]),
    "tamper-fp": ("tamper-resistant, larger update, full precision", [*TAMPER, "--snap", "none"]),
    "tamper-1": (
        "tamper-resistant with one attack step (lr 4e-3), rounded at gain 1.5",
        [*TAMPER, "--tamper-steps", "1", "--tamper-lr", "4e-3"],
    ),
}  # fmt: skip
ATTACKS = (
    "quant-int4,quant-int4-g128,quant-int4-sym,quant-int8,relearn,relearn-32,relearn-unrelated"
)
COLUMNS = [
    "variant", "held-out", "int4-g32", "int4-g128", "int4-sym", "int8", "relearn-8",
    "relearn-32", "unrelated-32", "retain/base", "ppl/base", "g128 retain/base", "s/round",
    "rounds",
]  # fmt: skip


def rr(*args: str, log: Path) -> float:
    """Run `rr` to completion (output to a log); its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, "-m", "reveal_release", *args], stdout=f, stderr=f)
    if code != 0:
        raise SystemExit(f"rr {args[0]} failed ({code}): see {log}")
    return time.perf_counter() - start


def rate(m: dict, attack: str) -> float | None:
    """The released model's held-out reveal rate after an attack."""
    return (m["attacks"].get(attack, {}).get("released") or {}).get("reveal_rate")


def row(name: str, run: Path) -> dict:
    """One table row from a variant's report and rounds."""
    m = json.loads((run / "report" / "metrics.json").read_text())
    base, rel = m["models"]["base"], m["models"]["released"]
    rounds = [json.loads(p.read_text()) for p in sorted(run.glob("round-*/metrics.json"))]
    g128 = (m["attacks"]["quant-int4-g128"].get("released") or {}).get("qa_accuracy")
    qa0 = base["utility"]["qa_accuracy"]
    return {
        "variant": name,
        "held-out": rel["heldout"]["rate"],
        "int4-g32": rate(m, "quant-int4"),
        "int4-g128": rate(m, "quant-int4-g128"),
        "int4-sym": rate(m, "quant-int4-sym"),
        "int8": rate(m, "quant-int8"),
        "relearn-8": rate(m, "relearn"),
        "relearn-32": rate(m, "relearn-32"),
        "unrelated-32": rate(m, "relearn-unrelated"),
        "retain/base": rel["utility"]["qa_accuracy"] / qa0,
        "ppl/base": rel["utility"]["perplexity"] / base["utility"]["perplexity"],
        "g128 retain/base": g128 / qa0 if g128 is not None else None,
        "s/round": sum(r["round_seconds"] for r in rounds) / max(len(rounds), 1),
        "rounds": ", ".join(
            f"{r['round']}{'(rb)' if r.get('rolled_back') else ''}: {r['heldout_reveal_rate']:.2f}"
            for r in rounds
        ),
        "base_heldout": base["heldout"]["rate"],
    }


def variant(name: str, reveal: Path, out: Path, extra: list[str], seed_cache: Path | None) -> dict:
    """Release and evaluate one variant in its own copy of the reveal run."""
    run = out / name
    if not (run / "report" / "metrics.json").exists():
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(reveal, run, ignore=shutil.ignore_patterns("round-*", "model", "report"))
        rr(
            "release",
            "--run",
            str(run),
            *VARIANTS[name][1],
            *extra,
            log=out / f"{name}.release.log",
        )
        if seed_cache is not None and seed_cache.exists():  # the base's figures, computed once
            (run / "report").mkdir(exist_ok=True)
            shutil.copy(seed_cache, run / "report" / "cache.json")
        rr("eval", "--run", str(run), "--attacks", ATTACKS, "--no-baseline",
           log=out / f"{name}.eval.log")  # fmt: skip
    return row(name, run)


def fmt(v: object) -> str:
    """A table cell."""
    return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def main() -> None:
    """Run the variants one after another and print the table (and write table.json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reveal", type=Path, required=True, help="A run folder after rr reveal.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", default="plain,new,sam,alt,qat")
    ap.add_argument("--release-args", default="", help="Extra rr release options for all.")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows, seed = [], None
    for name in args.variants.split(","):
        rows.append(variant(name, args.reveal, args.out, args.release_args.split(), seed))
        seed = args.out / name / "report" / "cache.json"
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "table.json").write_text(json.dumps(rows, indent=2))
    print(f"\nfrom {args.reveal} (base held-out reveal rate {rows[0]['base_heldout']:.2f})")
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS))
    for r in rows:
        label = f"{r['variant']}: {VARIANTS[r['variant']][0]}"
        print("| " + " | ".join([label] + [fmt(r[c]) for c in COLUMNS[1:]]) + " |")


if __name__ == "__main__":
    main()
