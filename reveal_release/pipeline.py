"""`rr run`: reveal, release and eval on one run folder, in one command, timed by stage."""

from __future__ import annotations

from pathlib import Path

from reveal_release.evaluate.settings import EvalSettings
from reveal_release.presets import check_preset
from reveal_release.release.config import ReleaseConfig
from reveal_release.reveal.config import RevealConfig
from reveal_release.stage_clock import StageClock


def run_command(
    *,
    target: str,
    run: Path,
    model: str,
    preset: str,
    backend: str,
    trust_remote_code: bool,
    device: str = "auto",
) -> None:
    """The three commands in turn on RUN (each resumes what a killed run had finished)."""
    from reveal_release.console import console
    from reveal_release.evaluate.command import eval_command, print_results
    from reveal_release.release.command import release_command
    from reveal_release.reveal.command import reveal_command

    check_preset(preset)
    total = StageClock()
    steps = ("reveal", "release", "eval")

    def header(i: int) -> StageClock:
        console.rule(f"[bold]rr run {i + 1}/3: {steps[i]}[/bold] ({target}, preset {preset})")
        return StageClock()

    clock = header(0)
    reveal_command(
        target=target, run=run, model=model, cfg=RevealConfig(), backend=backend,
        trust_remote_code=trust_remote_code, device=device, preset=preset, clock=clock,
    )  # fmt: skip
    total.add(clock.rows, "reveal: ")
    clock = header(1)
    release_command(
        run=run, cfg=ReleaseConfig(), backend=backend, trust_remote_code=trust_remote_code,
        device=device, preset=preset, clock=clock,
    )  # fmt: skip
    total.add(clock.rows, "release: ")
    clock = header(2)
    done = eval_command(
        run=run, model=None, target=None, base=None, out=None, settings=EvalSettings(),
        report_only=False, trust_remote_code=trust_remote_code, device=device, preset=preset,
        clock=clock, show=False,
    )  # fmt: skip
    total.add(clock.rows, "eval: ")
    total.print(f"rr run {target}")
    assert done is not None
    print_results(*done)  # the before/after and attack tables, and the report's path, last
