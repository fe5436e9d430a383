"""`rr release`: check the run, load its model, run the rounds with progress, print the tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.release.config import ReleaseConfig
from reveal_release.runs import RunDir

BACKENDS = ("hf", "vllm")


def _check_options(cfg: ReleaseConfig, backend: str) -> None:
    """Settings that cannot work fail before the run is touched."""
    if backend not in BACKENDS:
        raise RRError(f"unknown backend '{backend}': choose hf or vllm")
    if cfg.update == "r2f":
        from reveal_release.r2f.decoder import load_decoder

        load_decoder(Path(cfg.decoder))  # a bad decoder fails before any work


def _progress_reporter(bar: Any) -> Any:
    """A report(kind, **kw) callback that drives one bar per round's reveal and training."""
    from reveal_release.console import say

    tasks: dict[str, Any] = {}

    def report(kind: str, **kw: Any) -> None:
        k = kw.get("round", 0)
        if kind == "phase":
            say(f"round {k}: {kw['phase']}" if k else kw["phase"])
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


def release_command(
    *,
    run: Path,
    cfg: ReleaseConfig,
    backend: str,
    trust_remote_code: bool,
    explicit: frozenset[str] = frozenset(),
) -> None:
    """Everything `rr release` does, cheapest checks first."""
    from reveal_release.console import console, progress, say
    from reveal_release.models import load_model
    from reveal_release.release.rounds import check_inputs, run_release
    from reveal_release.release.summary import print_summary
    from reveal_release.targets.spec import apply_settings, load_target

    _check_options(cfg, backend)
    rd = RunDir.load(run)
    reveal_cfg = rd.reveal_config()
    spec = load_target(reveal_cfg["target"])
    cfg, flags = apply_settings(cfg, spec, "release", explicit)
    if flags:
        _check_options(cfg, backend)
        say(f"target {spec.identity()} sets {flags} (its spec; an option you give wins)")
    check_inputs(rd, spec, cfg)
    settings = {k: v for k, v in cfg.to_json().items() if k != "rounds"}
    done = rd.stage_info("release")
    if rd.is_done("release") and done.get("stop_kind") == "rounds" and cfg.rounds > done["rounds"]:
        rd.reopen("release")  # more rounds asked for than the finished run had: go on
    with rd.stage("release", settings) as st:
        if st.done:
            print_summary(rd, f"release: {spec.identity()} (finished earlier)")
            say(f"release already finished in {run}: {st.info.get('stop_reason', '')}")
            return
        loaded = load_model(reveal_cfg["model"], trust_remote_code=trust_remote_code, progress=True)
        rd.check_model(loaded.fingerprint)
        with progress() as bar:
            summary = run_release(
                rd, loaded, spec, cfg, report=_progress_reporter(bar), backend=backend
            )
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
