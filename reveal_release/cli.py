"""The `rr` command line: thin wrappers that parse options and call the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reveal_release.console import err_console
from reveal_release.embedded import DEFAULT_MODEL
from reveal_release.errors import RRError

app = typer.Typer(
    help="reveal-release: make a language model forget a target without its training data.",
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


def _not_yet(command: str, issue: int) -> None:
    raise RRError(
        f"`rr {command}` is not available yet (tracked in issue #{issue}); nothing was run"
    )


@app.command()
def models() -> None:
    """List the models rr can load now; embedded ones are marked."""
    from reveal_release.console import console, human_bytes, table
    from reveal_release.models import available_models

    rows = [
        (
            m.name + (" *" if m.embedded else ""),
            m.kind,
            m.cached,
            human_bytes(m.size_bytes),
            m.where if m.installed else f"not installed: {m.where}",
        )
        for m in available_models()
    ]
    table("Models (* embedded)", ["name", "what", "cached", "size", "where"], rows)
    console.print("Any local transformers folder, .gguf file or hub id (org/name) loads too.")


@app.command()
def generate(
    prompts: Annotated[list[str], typer.Argument(help="One or more prompts.")],
    model: ModelOpt = DEFAULT_MODEL,
    max_new_tokens: Annotated[int, typer.Option(min=1, max=4096)] = 64,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    temperature: Annotated[float, typer.Option(min=0.0)] = 0.0,
    seed: int = 0,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Run code shipped with a hub model (off: safer).")
    ] = False,
) -> None:
    """Answer prompts in one batch and print tokens/s: the quickest check that a model works."""
    from reveal_release.console import console, human_bytes, peak_rss_bytes, progress, table
    from reveal_release.generation import generate as run_generate
    from reveal_release.models import load_model

    loaded = load_model(model, trust_remote_code=trust_remote_code, progress=True)
    with progress() as bar:
        task = bar.add_task("generating", total=len(prompts))
        gens, stats = run_generate(
            loaded,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            temperature=temperature,
            seed=seed,
            on_batch=lambda n: bar.advance(task, n),
        )
    for g in gens:
        console.print(f"[bold]> {g.prompt}[/bold]", highlight=False)
        console.print(g.text or "[dim](empty answer)[/dim]", highlight=False, markup=False)
        console.print()
    table(
        "generate",
        [
            "model",
            "device",
            "load s",
            "cache",
            "prompts",
            "new tokens",
            "s",
            "tokens/s",
            "peak RSS",
        ],
        [
            (
                loaded.source.spec,
                str(loaded.device),
                loaded.load_seconds,
                "built now" if loaded.built_cache else ("hit" if loaded.source.gguf else "-"),
                stats.prompts,
                stats.new_tokens,
                stats.seconds,
                stats.tokens_per_s,
                human_bytes(peak_rss_bytes()),
            )
        ],
    )


@app.command()
def reveal(
    target: Annotated[
        str, typer.Option(help="code, person, toxicity, topic:<subject> or a TOML spec.")
    ],
    run: RunOpt,
    model: ModelOpt = DEFAULT_MODEL,
    budget: Annotated[
        int, typer.Option(min=1, help="Responses to sample for the forget set.")
    ] = 96,
    retain_budget: Annotated[
        int | None, typer.Option(min=1, help="Responses for the retain set (default budget/2).")
    ] = None,
    backend: Annotated[str, typer.Option(help="hf or vllm.")] = "hf",
    strategy: Annotated[str, typer.Option(help="neuralucb or random.")] = "neuralucb",
    features: Annotated[str, typer.Option(help="Bandit features: hidden or embedder.")] = "hidden",
    seed: int = 0,
    trust_remote_code: bool = False,
) -> None:
    """Make the model reveal what it knows about a target; write the forget and retain sets."""
    from reveal_release.reveal.cli_run import reveal_command

    reveal_command(
        target=target,
        run=run,
        model=model,
        budget=budget,
        retain_budget=retain_budget,
        backend=backend,
        strategy=strategy,
        features=features,
        seed=seed,
        trust_remote_code=trust_remote_code,
    )


@app.command()
def release(
    run: RunOpt,
    rounds: Annotated[int | None, typer.Option(help="Most rounds to run.")] = None,
    update: Annotated[str, typer.Option(help="lora or r2f.")] = "lora",
    loss: Annotated[str, typer.Option(help="npo, ga, refusal or simnpo.")] = "npo",
) -> None:
    """Unlearn what Reveal found, round after round, and merge the result."""
    _not_yet("release", 4)


@app.command(name="eval")
def evaluate(
    run: Annotated[Path | None, typer.Option("--run", help="The run folder.")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    target: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Held-out forgetting, utility and robustness attacks, with a report."""
    _not_yet("eval", 6)


@app.command()
def export(
    run: RunOpt,
    out: Annotated[Path, typer.Option(help="Where to write the export.")],
    format: Annotated[str, typer.Option(help="merged or adapters.")] = "merged",
) -> None:
    """Write the merged checkpoint, or the rounds' adapters as one PEFT adapter."""
    _not_yet("export", 4)


@r2f_app.command("fit")
def r2f_fit(
    proxy: Annotated[str, typer.Option(help="The proxy model to fit the decoder on.")],
    out: Annotated[Path, typer.Option(help="Where to save the decoder.")],
) -> None:
    """Fit a gradient decoder on a proxy model."""
    _not_yet("r2f fit", 5)


@r2f_app.command("check")
def r2f_check(
    decoder: Annotated[Path, typer.Option(help="A fitted decoder.")],
    model: ModelOpt = DEFAULT_MODEL,
) -> None:
    """Measure how well a decoder transfers to a model."""
    _not_yet("r2f check", 5)


def main() -> None:
    """Entry point: run the app; user errors become one line on stderr and exit code 2."""
    try:
        app()
    except RRError as exc:
        err_console.print(f"rr: error: {exc}", highlight=False, markup=False, soft_wrap=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("rr: interrupted; finished stages are kept, rerun to resume")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
