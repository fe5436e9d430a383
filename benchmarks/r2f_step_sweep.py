"""R2F's step size, swept on one revealed run, beside a LoRA round at the same number of updates.

    python benchmarks/r2f_step_sweep.py --reveal runs/code96 --decoder decoders/smollm2 \
        --out runs/r2f-sweep --steps 1e-4,3e-4,1e-3 [--precondition factored] [--momentum 0.9]

Each row is a real one-round `rr release` in its own copy of the revealed run (a finished row is
read back, not rerun): `--update lora`, then `--update r2f --r2f-step S` for each S, and the
single-step form of the R2F paper (one update of 16x the largest S: theta - eta * grad L), and
(`--guarded`) R2F steps whose updates the retain guard halves while they raise the retain
batch's NLL by more than `--guard` nats.
Columns come from the round's own measurement: the part of the update kept (with `--shrink`
every row, LoRA's too, keeps the largest part within the utility budget), held-out reveal rate,
retain accuracy and perplexity over the base's, the int4-g128 copy's reveal rate, and the
round's wall time. A row is within the utility budget when retain >= 0.9x and perplexity <=
1.1x (the release's defaults).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from reveal_release.console import table

COLUMNS = ["variant", "updates", "part kept", "held-out", "int4-g128", "retain/base",
           "ppl/base", "in budget", "s/round"]  # fmt: skip


def release(reveal: Path, folder: Path, args: list[str], rr: list[str] | None = None) -> dict:
    """Round 1's metrics of `rr release --rounds 1 ARGS` in a copy of the revealed run (`rr`:
    the command that runs rr, this Python's `-m reveal_release` unless given)."""
    if not (folder / "round-1" / "metrics.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(
            reveal, folder, ignore=shutil.ignore_patterns("round-*", "model", "release", "report")
        )
        manifest = json.loads((folder / "run.json").read_text())
        manifest["stages"] = {"reveal": manifest["stages"]["reveal"]}
        (folder / "run.json").write_text(json.dumps(manifest, indent=1))
        rr = rr or [sys.executable, "-m", "reveal_release"]
        cmd = [*rr, "release", "--run", str(folder), "--rounds", "1", *args]
        print("$ rr", " ".join(cmd[len(rr) :]), flush=True)
        with open(folder.parent / f"{folder.name}.log", "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=log)
        if code != 0:
            raise SystemExit(f"rr release failed ({code}): see {folder}.log")
    return json.loads((folder / "round-1" / "metrics.json").read_text())


def round_parser(description: str, step: float) -> argparse.ArgumentParser:
    """The options of a benchmark of one-round variants: the reveal, decoder, output folder,
    R2F's relative step and the updates per round."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--reveal", type=Path, required=True, help="A run folder after rr reveal.")
    ap.add_argument("--decoder", type=Path, required=True, help="A decoder from rr r2f fit.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--step", type=float, default=step, help="R2F's relative step.")
    ap.add_argument("--updates", type=int, default=16, help="Updates in the round.")
    return ap


def row(name: str, m: dict) -> list:
    """One table row from a round's metrics."""
    retain, ppl = m.get("retain_ratio"), m.get("ppl_ratio")
    ok = retain is not None and ppl is not None and retain >= 0.9 and ppl <= 1.1
    return [name, m["train_steps"], f"{m.get('update_fraction', 1.0):g}",
            f"{m['heldout_reveal_rate']:.2f}",
            f"{m.get('quant_reveal_rate', float('nan')):.2f}", f"{retain:.2f}", f"{ppl:.2f}",
            "yes" if ok else "no", f"{m['round_seconds']:.0f}"]  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The sweep's options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reveal", type=Path, required=True, help="A run folder after rr reveal.")
    ap.add_argument("--decoder", type=Path, required=True, help="A decoder from rr r2f fit.")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", default="1e-4,3e-4,1e-3", help="R2F relative steps to sweep.")
    ap.add_argument("--updates", type=int, default=16, help="Updates per round (--steps).")
    ap.add_argument("--guarded", default="", help="R2F steps to run with --r2f-retain-guard too.")
    ap.add_argument("--guard", type=float, default=0.005, help="The guard of those rows (nats).")
    ap.add_argument("--no-single", action="store_true", help="Skip the single-step row.")
    ap.add_argument("--no-lora", action="store_true", help="Skip the LoRA row.")
    ap.add_argument("--precondition", default="none", help="--r2f-precondition of the R2F rows.")
    ap.add_argument("--momentum", type=float, default=0.0, help="--r2f-momentum of the R2F rows.")
    ap.add_argument("--loss", default="", help="--loss of the R2F rows (default: the target's).")
    ap.add_argument("--retain-weight", type=float, default=0.0,
                    help="--retain-weight of the R2F rows (default: the target's).")  # fmt: skip
    ap.add_argument("--extra", default="", help="More rr release options for the R2F rows.")
    ap.add_argument("--shrink", type=int, default=0,
                    help="--shrink of every row, LoRA's too: a round over the utility budget "
                         "keeps the largest part of its update within it.")  # fmt: skip
    return ap


def main() -> None:
    args = parser().parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = ["--steps", str(args.updates)]
    if args.shrink:
        n += ["--shrink", str(args.shrink)]
    r2f = ["--update", "r2f", "--decoder", str(args.decoder)]
    tag = ""  # the R2F rows' options past the defaults, in their names and folders
    given = [  # (set, its rr release options, its part of the tag)
        (args.precondition != "none", ["--r2f-precondition", args.precondition], args.precondition),
        (bool(args.momentum), ["--r2f-momentum", str(args.momentum)], f"m{args.momentum:g}"),
        (bool(args.loss), ["--loss", args.loss], args.loss),
        (bool(args.retain_weight), ["--retain-weight", str(args.retain_weight)],
         f"a{args.retain_weight:g}"),
        (bool(args.extra), args.extra.split(), " ".join(x.lstrip("-") for x in args.extra.split())),
    ]  # fmt: skip
    for on, options, part in given:
        if on:
            r2f += options
            tag += f" {part}"
    shrunk = f" shrink {args.shrink}" if args.shrink else ""
    variants = {} if args.no_lora else {f"lora{shrunk}": [*n]}
    sizes = [float(s) for s in args.steps.split(",")]
    for s in sizes:
        variants[f"r2f step {s:g}{tag}{shrunk}"] = [*r2f, *n, "--r2f-step", str(s)]
    for s in [float(x) for x in args.guarded.split(",") if x]:
        variants[f"r2f step {s:g}{tag} guard {args.guard:g}"] = [
            *r2f,
            *n,
            "--r2f-step",
            str(s),
            "--r2f-retain-guard",
            str(args.guard),
        ]
    if not args.no_single:
        big = max(sizes) * args.updates
        variants[f"r2f single step {big:g}{tag}"] = [*r2f, "--steps", "1", "--r2f-step", str(big)]
    rows = []
    for name, extra in variants.items():
        folder = args.out / name.replace(" ", "-")  # a later call reads a finished row back
        rows.append(row(name, release(args.reveal, folder, extra)))
        table(f"R2F step sweep on {args.reveal}", COLUMNS, rows)


if __name__ == "__main__":
    main()
