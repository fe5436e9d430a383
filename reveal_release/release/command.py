"""`rr release`: check the run, load its model, run the rounds with progress, print the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.presets import apply_preset, check_preset
from reveal_release.release.config import ReleaseConfig
from reveal_release.runs import RunDir
from reveal_release.stage_clock import StageClock

BACKENDS = ("hf", "vllm")


def _check_options(cfg: ReleaseConfig, backend: str) -> None:
    """Settings that cannot work fail before the run is touched."""
    if backend not in BACKENDS:
        raise RRError(f"unknown backend '{backend}': choose hf or vllm")
    if cfg.update == "r2f":
        from reveal_release.r2f.decoder import load_decoder

        load_decoder(Path(cfg.decoder))  # a bad decoder fails before any work


def _progress_reporter(bar: Any, clock: StageClock) -> Any:
    """A report(kind, **kw) callback that drives one bar per round's reveal and training and
    times each phase."""
    from reveal_release.console import say

    tasks: dict[str, Any] = {}

    def report(kind: str, **kw: Any) -> None:
        k = kw.get("round", 0)
        if kind == "phase":
            say(f"round {k}: {kw['phase']}" if k else kw["phase"])
            clock.mark(stage_name(k, kw["phase"]))
            return
        key = f"{kind}-{k}"
        if key not in tasks:
            label = "reveal" if kind == "reveal" else "train"
            tasks[key] = bar.add_task(f"round {k} {label}", total=kw["total"])
        desc = f"round {k} {kind}"
        if kind == "train":
            desc += f" (forget {kw.get('forget', kw.get('forget_q', 0.0)):.3f})"
        bar.update(tasks[key], completed=kw["step"], description=desc)

    return report


def _settings(
    cfg: ReleaseConfig, spec: Any, preset: str, explicit: frozenset[str], backend: str
) -> ReleaseConfig:
    """The options given, then the preset's, then the target spec's, each said when used."""
    from reveal_release.console import say
    from reveal_release.targets.spec import apply_settings

    cfg, explicit, preset_flags = apply_preset(cfg, preset, "release", explicit)
    if preset_flags:
        say(f"preset {preset} sets {preset_flags}")
    cfg, flags = apply_settings(cfg, spec, "release", explicit)
    if flags:
        _check_options(cfg, backend)
        say(f"target {spec.identity()} sets {flags} (its spec; an option you give wins)")
    cfg.check_pairs()
    return _drop_unused(cfg, explicit, spec)


def _drop_unused(cfg: ReleaseConfig, explicit: frozenset[str], spec: Any) -> ReleaseConfig:
    """An option of the other update rule given is an error; one a spec or preset set is put
    back to its default, and said."""
    from reveal_release.console import say

    unused = cfg.unused_by_update(explicit)
    given = [k for k in unused if k in explicit]
    if given:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        other = "r2f" if cfg.update == "lora" else "lora"
        raise RRError(
            f"{flags} work with --update {other} only, not --update {cfg.update}: drop them or "
            f"give --update {other}"
        )
    if unused:
        flags = " ".join(f"--{k.replace('_', '-')}" for k in unused)
        say(f"--update {cfg.update} does not use {flags} (set for target {spec.identity()} or "
            "the preset): left at the defaults")  # fmt: skip
        cfg = cfg.unused_at_defaults(explicit)
    return cfg


def stage_name(k: int, phase: str) -> str:
    """A phase message as a stage of the timing table ('round 1: training', ...)."""
    what = phase.split(" (")[0].split(":")[0]
    if what.startswith("rounding"):
        what = "rounding onto the grid"
    elif what.startswith("the update at"):
        what = "measuring smaller updates"
    return f"round {k}: {what}" if k else what


def _reopen(rd: RunDir, cfg: ReleaseConfig) -> None:
    """What the command asks for again: round folders deleted since they finished, and more
    rounds than a finished release had, become pending."""
    from reveal_release.console import say
    from reveal_release.release.rounds import reopen_deleted_rounds

    gone = reopen_deleted_rounds(rd)
    if gone:
        say(f"round folders deleted since they finished: {', '.join(map(str, gone))}; "
            "training them again")  # fmt: skip
    done = rd.stage_info("release")
    if rd.is_done("release") and done.get("stop_kind") == "rounds" and cfg.rounds > done["rounds"]:
        rd.reopen("release")  # more rounds asked for than the finished run had: go on


def _follow(run: Path, device: str, trust_remote_code: bool) -> None:
    """A process of a launch other than the main one: train beside it, write nothing."""
    from reveal_release.release.followers import follow

    def load() -> Any:
        from reveal_release.models import load_model

        model = RunDir.load(run).reveal_config()["model"]
        return load_model(model, device=device, trust_remote_code=trust_remote_code)

    follow(load)


def release_command(**kw: Any) -> None:
    """Everything `rr release` does; under a launcher of several processes the main process
    does it and the others train beside it (reveal_release.release.followers)."""
    from reveal_release.parallel import launched_world

    if launched_world() == 1:
        return _release(**kw)
    from reveal_release.parallel import processes
    from reveal_release.release.followers import Followers

    sync = processes()
    if not sync.main:
        return _follow(kw["run"], kw.get("device", "auto"), kw["trust_remote_code"])
    try:
        _release(**kw)
    finally:
        Followers(sync).stop()


def _release(
    *,
    run: Path,
    cfg: ReleaseConfig,
    backend: str,
    trust_remote_code: bool,
    device: str = "auto",
    explicit: frozenset[str] = frozenset(),
    preset: str = "default",
    clock: StageClock | None = None,
) -> None:
    """`rr release` in its main process, cheapest checks first (a busy run is refused before
    the model libraries load)."""
    own_clock = clock is None
    clock = clock or StageClock()
    _check_options(cfg, backend)
    check_preset(preset)
    rd = RunDir.load(run, lock=True)
    from reveal_release.console import console, progress, say
    from reveal_release.models import load_model
    from reveal_release.release.followers import check_processes
    from reveal_release.release.rounds import check_inputs, run_release
    from reveal_release.release.summary import print_summary
    from reveal_release.targets.spec import load_target

    reveal_cfg = rd.reveal_config()
    spec = load_target(reveal_cfg["target"])
    cfg = _settings(cfg, spec, preset, explicit, backend)
    check_processes(cfg)
    check_inputs(rd, spec, cfg)
    _reopen(rd, cfg)
    settings = {k: v for k, v in cfg.to_json().items() if k != "rounds"}
    with rd.stage("release", settings) as st:
        if st.done:
            print_summary(rd, f"release: {spec.identity()} (finished earlier)")
            say(f"release already finished in {run}: {st.info.get('stop_reason', '')}")
            return
        clock.mark("loading the model")
        loaded = load_model(
            reveal_cfg["model"], device=device, trust_remote_code=trust_remote_code, progress=True
        )
        rd.check_model(loaded.fingerprint)
        with progress() as bar:
            summary = run_release(
                rd, loaded, spec, cfg, report=_progress_reporter(bar, clock), backend=backend
            )
        clock.stop()
        last = summary.rounds[-1] if summary.rounds else {}
        st.info.update(
            stop_reason=summary.stop_reason,
            stop_kind=last.get("stop_kind", ""),
            rounds=len(summary.rounds),
        )
    print_summary(
        rd, f"release: {spec.identity()} ({cfg.update}, {cfg.loss}, retain {cfg.retain_loss})"
    )
    console.print(f"stopped: {summary.stop_reason}")
    console.print(f"wrote {rd.path('model')} (merged) and {rd.path('round-*')}/ (adapters)")
    if own_clock:
        clock.print("rr release")
