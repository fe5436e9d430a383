"""One release round in one process and over N (`rr release --processes N`), side by side on
copies of one revealed run: how far apart the merged weights are, their figures, their times.

    .venv/bin/python benchmarks/processes.py --reveal runs/code --out runs/bench-processes \\
        --processes 2

With the same global batch, N processes should train the release one process trains (the
target spec's simulated attacker included): the gap is |W_N - W_1| / |W_1 - W_0| over the
adapted layers, 0 up to float rounding.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
from pathlib import Path

from release_variants import release as release_in_copy  # a sibling script

from reveal_release.console import table

FIGURES = ("heldout_reveal_rate", "quant_reveal_rate", "retain_ratio", "ppl_ratio", "train_seconds")


def release(reveal: Path, folder: Path, args: list[str]) -> float:
    """`rr release` in a fresh copy of the revealed run; wall seconds."""
    shutil.rmtree(folder, ignore_errors=True)
    return release_in_copy(reveal, folder, args)


def gap(one: Path, many: Path) -> float:
    """max over adapted layers of |W_N - W_1| / |W_1 - W_0|, W_0 rebuilt from round 1's adapter."""
    from safetensors.torch import load_file

    from reveal_release.train.lora import delta_weights

    w1, wn = (
        load_file(one / "model" / "model.safetensors"),
        load_file(many / "model" / "model.safetensors"),
    )
    worst = 0.0
    for key, delta in delta_weights(one / "round-1" / "adapter").items():
        name = key.removeprefix("base_model.model.") + ".weight"
        moved = float(delta.norm())
        if moved > 0 and name in w1:
            worst = max(worst, float((w1[name].float() - wn[name].float()).norm()) / moved)
    return worst


def main() -> None:
    """Run both releases and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reveal", type=Path, required=True, help="a run folder after rr reveal")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--release-args", default="", help="more rr release options, one string")
    args = ap.parse_args()
    common = ["--rounds", "1", "--snap", "none", *shlex.split(args.release_args)]
    rows, folders = [], {}
    for n in (1, args.processes):
        folder = args.out / f"processes-{n}"
        seconds = release(args.reveal, folder, [*common, "--processes", str(n)])
        m = json.loads((folder / "round-1" / "metrics.json").read_text())
        folders[n] = folder
        rows.append([str(n), *(f"{m.get(k) or 0:.3f}" for k in FIGURES), f"{seconds:.0f}"])
    g = gap(folders[1], folders[args.processes])
    rows[-1].append(f"{g:.4f}")
    rows[0].append("-")
    head = [
        "processes",
        "held-out",
        "g128 copy",
        "retain",
        "perplexity",
        "train s",
        "wall s",
        "gap",
    ]
    table(f"one release round, {' '.join(common)}", head, rows)
    (args.out / "processes.json").write_text(json.dumps({"rows": rows, "gap": g}, indent=1))


if __name__ == "__main__":
    main()
