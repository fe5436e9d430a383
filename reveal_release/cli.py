"""The `rr` command line: thin wrappers that parse options and call the library.

The options of `reveal`, `release`, `eval` and `r2f fit` come from the fields of their config
dataclasses (`with_config`): a default, a help text and a check are written once, there.
"""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from reveal_release.cli_options import with_config
from reveal_release.console import err_console
from reveal_release.embedded_models import DEFAULT_MODEL
from reveal_release.errors import RRError
from reveal_release.evaluate.settings import EvalSettings
from reveal_release.presets import PRESET_HELP
from reveal_release.r2f.fit_config import FitConfig
from reveal_release.release.config import ReleaseConfig
from reveal_release.reveal.config import RevealConfig

app = typer.Typer(
    help="reveal-release: make a language model forget a target without its training data.\n\n"
    "`rr run --target T --run DIR` does reveal, release and eval in one go. Presets "
    "(--preset on run, reveal, release and eval): quick (the demo), default, thorough.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
r2f_app = typer.Typer(help="R2F gradient decoders: fit on a proxy model, check on another.")
app.add_typer(r2f_app, name="r2f")

ModelOpt = Annotated[
    str, typer.Option("--model", "-m", help="Embedded alias, local folder, .gguf file or hub id.")
]
RunOpt = Annotated[Path, typer.Option("--run", help="The run folder.")]
TrustOpt = Annotated[bool, typer.Option(help="Run code shipped with a hub model (off: safer).")]


def _device_name(value: str) -> str:
    """--device checked before any work: one line for a name rr does not take."""
    from reveal_release.devices import check_device_name

    try:
        return check_device_name(value)
    except RRError as exc:
        raise typer.BadParameter(str(exc)) from None


DeviceOpt = Annotated[
    str,
    typer.Option(
        help="auto (a CUDA GPU when torch sees one, else the CPU), cpu, cuda or cuda:N.",
        callback=_device_name,
    ),
]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the figures here.")]
PresetOpt = Annotated[str, typer.Option(help=PRESET_HELP)]


@app.command()
def models() -> None:
    """List the models rr can load now; embedded ones are marked."""
    from reveal_release.model_checks import print_models

    print_models()


@app.command()
def generate(
    prompts: Annotated[list[str], typer.Argument(help="One or more prompts.")],
    model: ModelOpt = DEFAULT_MODEL,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096)] = 64,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.0,
    seed: int = 0,
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Answer prompts in one batch and print tokens/s: the quickest check that a model works."""
    from reveal_release.model_checks import generate_command

    generate_command(
        prompts, model=model, max_new_tokens=max_new_tokens, batch_size=batch_size,
        temperature=temperature, seed=seed, trust_remote_code=trust_remote_code, device=device,
    )  # fmt: skip


@app.command()
@with_config(RevealConfig)
def reveal(
    target: Annotated[
        str, typer.Option(help="code, person, toxicity, topic:<subject> or a TOML spec.")
    ],
    run: RunOpt,
    cfg: RevealConfig,
    model: ModelOpt = DEFAULT_MODEL,
    backend: Annotated[str, typer.Option(help="hf or vllm.")] = "hf",
    preset: PresetOpt = "default",
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = "auto",
    explicit: frozenset[str] = frozenset(),
) -> None:
    """Make the model reveal what it knows about a target; write the forget and retain sets."""
    from reveal_release.reveal.command import reveal_command

    reveal_command(
        target=target, run=run, model=model, cfg=cfg, backend=backend,
        trust_remote_code=trust_remote_code, device=device, explicit=explicit, preset=preset,
    )  # fmt: skip


@app.command()
@with_config(ReleaseConfig)
def release(
    run: RunOpt,
    cfg: ReleaseConfig,
    backend: Annotated[str, typer.Option(help="Sampler for the rounds' reveals: hf or vllm.")] = (
        "hf"
    ),
    preset: PresetOpt = "default",
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = "auto",
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train over N processes (one per GPU; data-parallel through Accelerate); the "
            "first reveals, measures and writes.",
        ),
    ] = 1,
    explicit: frozenset[str] = frozenset(),
) -> None:
    """Unlearn what Reveal found, round after round; write DIR/round-K/ and DIR/model/."""
    from reveal_release.parallel import launched_world
    from reveal_release.release.command import release_command

    if processes > 1 and launched_world() == 1:
        from reveal_release.launch import relaunch

        raise SystemExit(relaunch(processes, sys.argv[1:], device))

    release_command(
        run=run, cfg=cfg, backend=backend, trust_remote_code=trust_remote_code, device=device,
        explicit=explicit, preset=preset,
    )  # fmt: skip


@app.command(name="eval")
@with_config(EvalSettings, name="settings")
def evaluate(
    settings: EvalSettings,
    run: Annotated[Path | None, typer.Option("--run", help="The run folder.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="A model outside a run (with --target).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Target for --model.")] = None,
    base: Annotated[
        str | None, typer.Option(help="With --model: the original model, for before figures.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Report folder (default DIR/report, or rr-eval/report).")
    ] = None,
    report_only: Annotated[
        bool, typer.Option(help="Rebuild the report from its metrics.json; load no model.")
    ] = False,
    preset: PresetOpt = "default",
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = "auto",
    explicit: frozenset[str] = frozenset(),
) -> None:
    """Held-out forgetting, utility and robustness attacks, with a report."""
    from reveal_release.evaluate.command import eval_command

    eval_command(
        run=run, model=model, target=target, base=base, out=out, settings=settings,
        report_only=report_only, trust_remote_code=trust_remote_code, device=device,
        explicit=explicit, preset=preset,
    )  # fmt: skip


@app.command(name="run")
def run_all(
    target: Annotated[
        str, typer.Option(help="code, person, toxicity, topic:<subject> or a TOML spec.")
    ],
    run: RunOpt,
    model: ModelOpt = DEFAULT_MODEL,
    preset: PresetOpt = "default",
    backend: Annotated[str, typer.Option(help="Sampler for the reveals: hf or vllm.")] = "hf",
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Reveal, release and eval in one go (a finished stage is read back); the time by stage."""
    from reveal_release.pipeline import run_command

    run_command(
        target=target, run=run, model=model, preset=preset, backend=backend,
        trust_remote_code=trust_remote_code, device=device,
    )  # fmt: skip


@app.command()
def export(
    run: RunOpt,
    out: Annotated[Path, typer.Option(help="Where to write the export (a new folder).")],
    format: Annotated[
        str, typer.Option(help="merged (full checkpoint) or adapters (one PEFT LoRA).")
    ] = "merged",
) -> None:
    """Write the released model: a merged checkpoint, or the rounds' modules as one adapter."""
    from reveal_release.console import table
    from reveal_release.release.export import export_run
    from reveal_release.runs import RunDir

    info = export_run(RunDir.load(run, lock=True), out, format)
    note = info.pop("note", None)
    table("export", list(info), [list(info.values())])
    if note:
        typer.echo(f"note: {note}", err=True)


@r2f_app.command("fit")
@with_config(FitConfig)
def r2f_fit(
    proxy: Annotated[str, typer.Option(help="The proxy model to fit the decoder on.")],
    out: Annotated[Path, typer.Option(help="Where to save the decoder (a new folder).")],
    cfg: FitConfig,
    json_path: JsonOpt = None,
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Fit a gradient decoder on a proxy model; print held-out cosines per layer kind."""
    from reveal_release.r2f.command import fit_command

    fit_command(
        proxy=proxy,
        out=out,
        cfg=cfg,
        json_path=json_path,
        trust_remote_code=trust_remote_code,
        device=device,
    )


@r2f_app.command("check")
def r2f_check(
    decoder: Annotated[Path, typer.Option(help="A fitted decoder folder.")],
    model: ModelOpt = DEFAULT_MODEL,
    prompts: Annotated[int, typer.Option(min=4, help="Held-out prompts (batches of 4).")] = 8,
    json_path: JsonOpt = None,
    seed: int = 0,
    views_from: Annotated[
        str,
        typer.Option(
            help="What tells the views apart, as rr release --r2f-views takes them: "
            "paraphrases or projections."
        ),
    ] = "paraphrases",
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = "auto",
) -> None:
    """Held-out cosine of a decoder on a model, against the analytic baseline."""
    from reveal_release.r2f.command import check_command

    check_command(
        decoder=decoder, model=model, prompts=prompts, json_path=json_path, seed=seed,
        trust_remote_code=trust_remote_code, device=device, views_from=views_from,
    )  # fmt: skip


def _error(message: str, code: int = 2) -> SystemExit:
    """Print the tool's one error line; the exit to raise."""
    line = " ".join(message.split())
    err_console.print(f"rr: error: {line}", highlight=False, markup=False, soft_wrap=True)
    return SystemExit(code)


def _usage_error(exc: typer.TyperException) -> SystemExit:
    """A command-line mistake (unknown option, a value of the wrong type) as one line."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        err_console.print(ctx.get_help(), highlight=False, markup=False)
        return SystemExit(2)
    names = []
    while ctx is not None and ctx.parent is not None:  # the subcommands, not the program name
        names.insert(0, ctx.info_name)
        ctx = ctx.parent
    where = f" (see `{' '.join(['rr', *names, '--help'])}`)"
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    return _error(f"{message}{where}")


_interrupts: list[int] = []  # SIGINTs received (Typer turns KeyboardInterrupt into exit 130)


def _on_sigint(signum: int, frame: Any) -> None:
    _interrupts.append(signum)
    signal.default_int_handler(signum, frame)  # raise KeyboardInterrupt, as Python does


def _interrupted() -> NoReturn:
    """What a Ctrl-C leaves: the line saying what is kept and the command that resumes; exit
    130. The exit is os._exit after the atexit handlers: CPython re-raises SIGINT at exit (exit
    code -2, not 130) when a KeyboardInterrupt once crossed code it runs through PyRun_*,
    however the interrupt was handled afterwards."""
    again = shlex.join(["rr", *sys.argv[1:]])
    err_console.print(
        f"rr: interrupted: finished stages and saved steps are kept; resume with: "
        f"{again}", highlight=False, markup=False, soft_wrap=True,
    )  # fmt: skip
    atexit._run_exitfuncs()  # the run lock's release among them
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _check_launch(argv: list[str]) -> None:
    """Under a launcher of several processes only `rr release` runs (it trains data-parallel);
    any other command would run once per process on the same run folder."""
    from reveal_release.parallel import launched_world

    world = launched_world()
    if world > 1 and argv[1:2] != ["release"]:
        what = f"rr {argv[1]}" if len(argv) > 1 else "rr"
        raise RRError(
            f"{what} runs in one process, and a launcher started {world} (WORLD_SIZE): only "
            "`rr release` trains over several; run this command without accelerate launch"
        )


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit code 2, an
    interrupt a line saying what is kept and how to resume, and exit code 130."""
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        _check_launch(sys.argv)
        code = app(standalone_mode=False)
    except RRError as exc:
        raise _error(str(exc), exc.exit_code) from None
    except typer.TyperException as exc:
        raise _usage_error(exc) from None
    except (KeyboardInterrupt, typer.Abort):
        _interrupted()
    if _interrupts:
        _interrupted()
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
