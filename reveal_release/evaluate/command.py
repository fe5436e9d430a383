"""`rr eval`: pick what to compare, measure it with progress, write the report, print tables."""

from __future__ import annotations

from pathlib import Path

from reveal_release.errors import RRError
from reveal_release.evaluate.settings import EvalSettings


def eval_command(
    *,
    run: Path | None,
    model: str | None,
    target: str | None,
    base: str | None,
    out: Path | None,
    settings: EvalSettings,
    report_only: bool,
    trust_remote_code: bool,
) -> None:
    """Everything `rr eval` does, cheapest checks first."""
    from reveal_release.console import console, say, table
    from reveal_release.evaluate.inputs import model_inputs, run_inputs
    from reveal_release.evaluate.report import (
        attack_rows,
        build_report,
        report_from_file,
        summary_rows,
    )
    from reveal_release.evaluate.runner import evaluate

    if (run is None) == (model is None):
        raise RRError("pass either --run DIR or --model M --target T")
    if model is not None and not target:
        raise RRError("--model needs --target (e.g. --target code)")
    if run is not None and (target or base):
        raise RRError("--target and --base go with --model; a run knows its target and base")
    if out is None:
        out = run / "report" if run is not None else Path("rr-eval") / "report"
    if report_only:
        paths = report_from_file(out / "metrics.json", out)
        say(f"report rebuilt from {out / 'metrics.json'}: {paths['html']}")
        return
    if run is not None:
        inp = run_inputs(run, trust_remote_code=trust_remote_code)
    else:
        inp = model_inputs(model, target, base, trust_remote_code=trust_remote_code)
    for note in inp.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    metrics = evaluate(inp, settings, out, say=say)
    paths = build_report(metrics, out)
    labels = metrics["labels"]
    cols = [labels.get(k, k) for k in ("base", "released") if k in metrics["models"]]
    table(f"rr eval: {metrics['target']}", ["metric", *cols], summary_rows(metrics))
    ev = labels.get(metrics["evaluated"], metrics["evaluated"])
    table("attacks", ["attack", "what", "base", ev, "recovered", "note"], attack_rows(metrics))
    for name, e in metrics["attacks"].items():
        if "skipped" in e:
            console.print(f"attack {name} skipped: {e['skipped']}")
    c = metrics["cache"]
    say(
        f"eval took {metrics['seconds']:.0f} s ({c['computed']} figures computed, "
        f"{c['hits']} from the cache); report: {paths['html']}"
    )
