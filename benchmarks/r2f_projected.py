"""R2F with Adam on a rank-r projection of each decoded gradient (`--r2f-precondition galore`)
and the variants of it: unit steps, a projection renewed every step, a random input basis
(LoRA with a frozen A), and true gradients in place of the decoded ones.

    python benchmarks/r2f_projected.py --reveal runs/hp32 --decoder decoders/smollm2 \\
        --out runs/r2f-projected --step 1e-3 --variants galore,unit,random-unit

Each row is a real one-round `rr release --update r2f --r2f-precondition galore` in a copy of
the revealed run (a finished row is read back); a variant's rr runs in a child of this script
that builds the galore preconditioner with the variant's settings (and, for `true-...`, steps
along the true gradients as benchmarks/r2f_oracle.py does). Columns as in
benchmarks/r2f_step_sweep.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from r2f_step_sweep import COLUMNS, release, round_parser, row  # noqa: E402

from reveal_release.console import table  # noqa: E402

# variant -> Projected's settings beside the rank ("true": along the true gradients)
VARIANTS: dict[str, dict] = {
    "galore": {},
    "unit": {"scaled": False},
    "renewed-unit": {"refresh": 1, "beta1": 0.0, "scaled": False},
    "random": {"basis": "random"},
    "random-unit": {"basis": "random", "scaled": False},
    "true-random-unit": {"basis": "random", "scaled": False, "true": True},
}


def run_variant(settings: dict, argv: list[str]) -> None:
    """`rr ARGV` in this process with galore built from `settings` (the child's side)."""
    import reveal_release.r2f.step as step
    from reveal_release.cli import main as rr_main

    settings = dict(settings)
    if settings.pop("true", False):
        sys.path.insert(0, str(Path(__file__).parent))
        from r2f_oracle import run_with_true_gradients

        step.PRECONDITIONERS["galore"] = lambda rank: step.Projected(rank, **settings)
        run_with_true_gradients(argv)
        return
    step.PRECONDITIONERS["galore"] = lambda rank: step.Projected(rank, **settings)
    sys.argv = ["rr", *argv]
    rr_main()


def main() -> None:
    ap = round_parser(__doc__.splitlines()[0], 1e-3)
    ap.add_argument("--variants", default="galore", help=f"Any of {', '.join(VARIANTS)}.")
    args = ap.parse_args()
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant {unknown[0]!r}: choose from {', '.join(VARIANTS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    opts = ["--update", "r2f", "--decoder", str(args.decoder), "--steps", str(args.updates),
            "--r2f-step", str(args.step), "--r2f-precondition", "galore"]  # fmt: skip
    rows = []
    for name in names:
        child = [sys.executable, str(Path(__file__).resolve()), "--rr", json.dumps(VARIANTS[name])]
        folder = args.out / f"{name}-{args.step:g}"
        rows.append(row(f"{name}, step {args.step:g}", release(args.reveal, folder, opts, child)))
        table(f"R2F on a rank-r projection, on {args.reveal}", COLUMNS, rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rr"]:
        run_variant(json.loads(sys.argv[2]), sys.argv[3:])
    else:
        main()
