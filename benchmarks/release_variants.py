"""Release variants from one revealed run, side by side: iterative rounds vs one round at the
same total steps, orthogonality weight 0 vs the default, NPO vs gradient ascent.

    .venv/bin/python benchmarks/release_variants.py --reveal runs/code --out runs/bench-release

Each variant is a real `rr release` in its own copy of the revealed run (a finished variant is
read back, not rerun), so the rows differ only in the options shown.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from reveal_release.console import human_bytes, table

VARIANTS = {
    "default: NPO, orth 0.5": [],
    "orth weight 0": ["--orth-weight", "0"],
    "gradient ascent": ["--loss", "ga"],
}


def release(reveal: Path, folder: Path, args: list[str]) -> float:
    """Run `rr release` in a copy of the revealed run; wall seconds (0 when already done)."""
    if not folder.exists():
        shutil.copytree(
            reveal, folder, ignore=shutil.ignore_patterns("round-*", "model", "release")
        )
        manifest = json.loads((folder / "run.json").read_text())
        manifest["stages"] = {"reveal": manifest["stages"]["reveal"]}
        (folder / "run.json").write_text(json.dumps(manifest, indent=1))
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "reveal_release.cli", "release", "--run", str(folder), *args]
    print("$", " ".join(cmd[2:]), flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{folder}: {out.stderr.strip()}")
    return time.perf_counter() - start


def rounds_of(folder: Path) -> list[dict]:
    """Each finished round's metrics.json."""
    out, k = [], 1
    while (folder / f"round-{k}" / "metrics.json").is_file():
        out.append(json.loads((folder / f"round-{k}" / "metrics.json").read_text()))
        k += 1
    return out


def main() -> None:
    """Run the variants and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reveal", type=Path, required=True, help="a run folder after rr reveal")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    base = None
    results = {}
    for i, (name, extra) in enumerate(VARIANTS.items()):
        folder = args.out / f"variant-{i}"
        secs = release(args.reveal, folder, ["--rounds", str(args.rounds), *extra])
        results[name] = (folder, secs)
    # One round with the same total training steps as the default's rounds.
    default_rounds = rounds_of(results[next(iter(VARIANTS))][0])
    total = sum(r["train_steps"] for r in default_rounds)
    name = f"1 round, {total} steps"
    folder = args.out / "one-round"
    results[name] = (folder, release(args.reveal, folder, ["--rounds", "1", "--steps", str(total)]))
    for name, (folder, secs) in results.items():
        base = json.loads((folder / "release" / "base-metrics.json").read_text())
        rs = rounds_of(folder)
        last = rs[-1]
        rows.append(
            (
                name,
                len(rs),
                sum(r["train_steps"] for r in rs),
                ">".join(f"{r['heldout_reveal_rate']:.2f}" for r in rs),
                last["retain_ratio"],
                last["ppl_ratio"],
                sum(r["train_seconds"] for r in rs) / len(rs),
                sum(r["round_seconds"] for r in rs) / len(rs),
                human_bytes(max(r["peak_rss_bytes"] for r in rs)),
                round(secs) if secs > 20 else "earlier",
            )
        )
    table(
        f"release variants (base: held-out reveal {base['heldout_reveal_rate']:.2f}, "
        f"retain acc. {base['retain_accuracy']:.2f}, perplexity {base['perplexity']:.2f})",
        ["variant", "rounds", "steps", "held-out reveal", "retain/base", "ppl/base",
         "train s/rnd", "s/round", "peak RSS", "wall s"],
        rows,
    )  # fmt: skip


if __name__ == "__main__":
    main()
