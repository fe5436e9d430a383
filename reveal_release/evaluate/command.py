"""`rr eval`: pick what to compare, measure it with progress, write the report, print tables."""

from __future__ import annotations

from pathlib import Path

from reveal_release.errors import RRError
from reveal_release.evaluate.report_folder import check_report_folder
from reveal_release.evaluate.settings import EvalSettings
from reveal_release.presets import apply_preset
from reveal_release.runs import RunDir
from reveal_release.stage_clock import StageClock


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
    device: str = "auto",
    explicit: frozenset[str] = frozenset(),
    preset: str = "default",
    clock: StageClock | None = None,
    show: bool = True,
) -> tuple[dict, dict] | None:
    """Everything `rr eval` does, cheapest checks first; (metrics, report paths), printed
    unless `show` is off (`rr run` prints them last)."""
    _check_sources(run, model, target, base)
    settings, _, preset_flags = apply_preset(settings, preset, "eval", explicit)
    out = out or (run / "report" if run is not None else Path("rr-eval") / "report")
    check_report_folder(out)
    if run is not None and not report_only:
        RunDir.load(run, lock=True)  # a busy run is refused before the model libraries load
    from reveal_release.console import console, say
    from reveal_release.evaluate.inputs import model_inputs, run_inputs
    from reveal_release.evaluate.report import build_report, report_from_file
    from reveal_release.evaluate.runner import evaluate

    own_clock = clock is None
    clock = clock or StageClock()
    if preset_flags:
        say(f"preset {preset} sets {preset_flags}")
    if report_only:
        paths = report_from_file(out / "metrics.json", out)
        say(f"report rebuilt from {out / 'metrics.json'}: {paths['html']}")
        return None
    clock.mark("loading the models")
    if run is not None:
        inp = run_inputs(run, trust_remote_code=trust_remote_code, device=device)
    else:
        inp = model_inputs(model, target, base, trust_remote_code, device)
    for note in inp.notes:
        console.print(f"[yellow]note:[/yellow] {note}")

    def say_and_time(msg: str) -> None:
        say(msg)
        clock.mark(msg.split(" (")[0])

    clock.mark("the judge, figures read back")
    metrics = evaluate(inp, settings, out, say=say_and_time)
    clock.mark("writing the report")
    paths = build_report(metrics, out)
    clock.stop()
    if show:
        print_results(metrics, paths)
    if own_clock:
        clock.print("rr eval")
    return metrics, paths


def _check_sources(run: Path | None, model: str | None, target: str | None, base: str | None):
    """A run, or a model with its target (and optional base): one-line errors otherwise."""
    if (run is None) == (model is None):
        raise RRError("pass either --run DIR or --model M --target T")
    if model is not None and not target:
        raise RRError("--model needs --target (e.g. --target code)")
    if run is not None and (target or base):
        raise RRError("--target and --base go with --model; a run knows its target and base")


def print_results(metrics: dict, paths: dict) -> None:
    """The before/after table, the attack table, what was skipped and why, the report's path."""
    from reveal_release.console import console, say, table
    from reveal_release.evaluate.report import attack_rows, summary_rows

    labels = metrics["labels"]
    cols = [labels.get(k, k) for k in ("base", "released") if k in metrics["models"]]
    table(f"rr eval: {metrics['target']}", ["metric", *cols], summary_rows(metrics))
    ev = labels.get(metrics["evaluated"], metrics["evaluated"])
    off = [name for name, e in metrics["attacks"].items() if "turned off" in e.get("skipped", "")]
    rows = [r for r in attack_rows(metrics) if r[0] not in off]  # the report lists them all
    table("attacks", ["attack", "what", "base", ev, "recovered", "note"], rows)
    for name, e in metrics["attacks"].items():
        if "skipped" in e and name not in off:
            console.print(f"attack {name} skipped: {e['skipped']}")
    if off:
        console.print(f"attacks turned off (--attacks): {', '.join(off)}")
    c = metrics["cache"]
    say(
        f"eval took {metrics['seconds']:.0f} s ({c['computed']} figures computed, "
        f"{c['hits']} from the cache); report: {paths['html']}"
    )
