"""Is the decoder or the step rule what holds R2F back? One R2F round along the decoded
gradients beside the same round along the true ones, and along decoded ones averaged over
steps (--r2f-momentum).

    python benchmarks/r2f_oracle.py --reveal runs/hp32 --decoder decoders/smollm2 \\
        --out runs/r2f-oracle --step 1e-4 --momentum 0.9

The rows are real one-round `rr release --update r2f` runs in copies of the revealed run (a
finished row is read back), with the same seeds, views, batches and step sizes; the second
steps each layer along the gradient its sketches were taken from (each layer's dL/dW summed in
the same backward pass) instead of the decoder's estimate of it. If the true-gradient row
forgets at no more utility than LoRA does, the decoder is the limit; if it does not, the step
rule is. The momentum rows step along an exponential average of the steps' unit decoded
gradients, which keeps what the steps share and averages out the error each fresh sketch
draws. Columns as in benchmarks/r2f_step_sweep.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from r2f_step_sweep import COLUMNS, release, round_parser, row  # noqa: E402

from reveal_release.console import table  # noqa: E402


def run_with_true_gradients(argv: list[str]) -> None:
    """`rr ARGV` in this process, every R2F step along the true gradient (the child's side)."""
    import reveal_release.r2f.sketch as sketch
    import reveal_release.r2f.step as step
    from reveal_release.cli import main as rr_main

    capture_views, decoded_step = sketch.capture_views, step.decoded_step

    def capture_true(model, layers, loss_fn, a_views, out, want_true=False, keep_inputs=0):
        return capture_views(model, layers, loss_fn, a_views, out, True, keep_inputs)

    def true_step(dec, layers, mods, cap, *args, **kw):
        kw["gradient"] = lambda ly: cap.true[ly.name]
        return decoded_step(dec, layers, mods, cap, *args, **kw)

    sketch.capture_views, step.decoded_step = capture_true, true_step
    sys.argv = ["rr", *argv]
    rr_main()


def main() -> None:
    ap = round_parser(__doc__.splitlines()[0], 1e-4)
    ap.add_argument("--momentum", default="", help="--r2f-momentum values for more rows.")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    opts = ["--update", "r2f", "--decoder", str(args.decoder), "--steps", str(args.updates),
            "--r2f-step", str(args.step)]  # fmt: skip
    child = [sys.executable, str(Path(__file__).resolve()), "--rr"]
    # (name, folder suffix, extra options, how rr runs); the decoded row's folder is
    # r2f_step_sweep.py's for the same step, so one --out serves both
    variants = [("decoded gradients", "", [], None), ("true gradients", "-true", [], child)]
    for m in [float(x) for x in args.momentum.split(",") if x]:
        variants.append((f"decoded, momentum {m:g}", f"-m{m:g}", ["--r2f-momentum", str(m)], None))
    rows = []
    for name, suffix, extra, rr in variants:
        folder = args.out / f"r2f-step-{args.step:g}{suffix}"
        got = release(args.reveal, folder, [*opts, *extra], rr)
        rows.append(row(f"r2f step {args.step:g}, {name}", got))
        table(f"R2F along decoded and true gradients on {args.reveal}", COLUMNS, rows)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rr"]:
        run_with_true_gradients(sys.argv[2:])
    else:
        main()
