"""`rr reveal`: validate input, open the run, run the stage with a progress bar, print a summary."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.presets import apply_preset
from reveal_release.reveal.config import RevealConfig
from reveal_release.stage_clock import StageClock

BACKENDS = ("hf", "vllm")


def _on_step(bar: Any) -> Any:
    """A progress callback: one bar per search, showing the best relevance so far."""
    tasks: dict[str, int] = {}

    def on_step(name: str, i: int, n: int, pulls: list) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(f"reveal {name} set", total=n)
        best = max(p.relevance for p in pulls)
        bar.update(tasks[name], completed=i, description=f"reveal {name} (rel {best:.2f})")

    return on_step


def _settings(
    target: str, cfg: RevealConfig, backend: str, preset: str, explicit: frozenset[str]
) -> tuple[Any, RevealConfig]:
    """The target and the settings (preset, then the target's spec, then the options given),
    each checked, with a line saying what the preset and the spec set; no file is touched."""
    from reveal_release.console import say
    from reveal_release.targets.judges import judge_class
    from reveal_release.targets.spec import apply_settings, load_target

    if backend not in BACKENDS:
        raise RRError(f"unknown backend '{backend}': choose hf or vllm")
    cfg, explicit, preset_flags = apply_preset(cfg, preset, "reveal", explicit)
    spec = load_target(target)
    if preset_flags:
        say(f"preset {preset} sets {preset_flags}")
    cfg, flags = apply_settings(cfg, spec, "reveal", explicit)
    if flags:
        say(f"target {spec.identity()} sets {flags} (its spec; an option you give wins)")
    judge_class(spec.judge)  # an unknown judge or a missing package
    return spec, cfg


def reveal_command(
    *,
    target: str,
    run: Path,
    model: str,
    cfg: RevealConfig,
    backend: str,
    trust_remote_code: bool,
    device: str = "auto",
    explicit: frozenset[str] = frozenset(),
    preset: str = "default",
    clock: StageClock | None = None,
) -> None:
    """Everything `rr reveal` does, in the order a user's mistakes are cheapest to catch."""
    from reveal_release.console import console, progress, say
    from reveal_release.runs import RunDir, claim
    from reveal_release.targets.judges import make_judge

    own_clock = clock is None
    clock = clock or StageClock()
    spec, cfg = _settings(target, cfg, backend, preset, explicit)
    claim(run)  # a busy run is refused before the judge and the model libraries load
    make_judge(spec.judge, **spec.judge_params)  # a judge that cannot load: before the model
    from reveal_release.models import load_model, model_summary
    from reveal_release.reveal.samplers import make_sampler
    from reveal_release.reveal.stage import run_reveal, summary_dict
    from reveal_release.reveal.summary import print_summary

    clock.mark("loading the model")
    loaded = load_model(model, device=device, trust_remote_code=trust_remote_code, progress=True)
    rd = RunDir.open(run, {"model": loaded.fingerprint, "target": spec.identity()})
    config = {"model": model, "target": target, "backend": backend, **asdict(cfg)}
    rd.manifest.setdefault("model", model_summary(loaded))
    rd.manifest["seed"] = cfg.seed
    with rd.stage("reveal", config) as st:
        if st.done:
            say(f"reveal already finished in {run}: nothing to do (forget {st.info.get('forget')})")
            return
        clock.mark(f"starting the {backend} sampler")
        sampler = make_sampler(backend, loaded)
        try:
            with progress() as bar:
                summary = run_reveal(
                    loaded, spec, sampler, rd, cfg, on_step=_on_step(bar), on_stage=clock.mark
                )
        finally:
            sampler.close()
        clock.stop()
        st.info.update(summary_dict(summary))
    print_summary(summary, f"reveal: {spec.identity()} on {model}")
    console.print(f"wrote {rd.path('reveal')}/forget.jsonl, retain.jsonl, bandit.jsonl")
    if own_clock:
        clock.print("rr reveal")
