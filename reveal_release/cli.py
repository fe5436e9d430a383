"""The `rr` command line: thin wrappers that parse options and call the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reveal_release.console import err_console
from reveal_release.embedded import DEFAULT_MODEL
from reveal_release.errors import RRError
from reveal_release.evaluate.attack_names import ALL_ATTACKS
from reveal_release.release.config import ReleaseConfig

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
    rounds: Annotated[int, typer.Option(min=1, help="Most rounds to run.")] = 3,
    update: Annotated[str, typer.Option(help="Update rule: lora or r2f.")] = "lora",
    loss: Annotated[str, typer.Option(help="Forget loss: npo, ga, refusal or simnpo.")] = "npo",
    retain_loss: Annotated[
        str, typer.Option(help="Retain loss: kl or nll.")
    ] = ReleaseConfig.retain_loss,
    steps: Annotated[int, typer.Option(help="Optimiser steps per round.")] = ReleaseConfig.steps,
    lr: Annotated[
        float, typer.Option(help="Learning rate of round k's module.")
    ] = ReleaseConfig.lr,
    rank: Annotated[int, typer.Option(help="LoRA rank r of each round.")] = ReleaseConfig.rank,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (s = alpha / r).")] = ReleaseConfig.alpha,
    batch_size: Annotated[int, typer.Option(help="Forget and retain sequences per step.")] = (
        ReleaseConfig.batch_size
    ),
    retain_weight: Annotated[float, typer.Option(help="Weight a of the retain loss.")] = (
        ReleaseConfig.retain_weight
    ),
    orth_weight: Annotated[float, typer.Option(help="Weight l1 of the O-LoRA term.")] = (
        ReleaseConfig.orth_weight
    ),
    l2_weight: Annotated[float, typer.Option(help="Weight l2 of ||theta_k||^2.")] = (
        ReleaseConfig.l2_weight
    ),
    beta: Annotated[float, typer.Option(help="NPO / SimNPO beta.")] = ReleaseConfig.beta,
    target_modules: Annotated[
        str, typer.Option(help="Comma-separated module names that get LoRA.")
    ] = ",".join(ReleaseConfig.target_modules),
    reveal_budget: Annotated[
        int, typer.Option(help="Answers each later round samples to reveal again.")
    ] = ReleaseConfig.reveal_budget,
    stop_rate: Annotated[
        float, typer.Option(help="Stop once the held-out reveal rate is at or below this.")
    ] = ReleaseConfig.stop_rate,
    min_retain_ratio: Annotated[
        float, typer.Option(help="Utility budget: retain accuracy at least this x the base's.")
    ] = ReleaseConfig.min_retain_ratio,
    max_ppl_ratio: Annotated[
        float, typer.Option(help="Utility budget: perplexity at most this x the base's.")
    ] = ReleaseConfig.max_ppl_ratio,
    converge: Annotated[
        float,
        typer.Option(help="End a round once the forget loss is below this x its first (0: off)."),
    ] = ReleaseConfig.converge,
    probes: Annotated[
        int, typer.Option(min=0, help="Held-out probes per measurement (0: all).")
    ] = 0,
    qa: Annotated[
        int, typer.Option(min=0, help="Retain QA questions per measurement (0: all).")
    ] = 0,
    checkpoint_every: Annotated[
        int, typer.Option(min=1, help="Save training state every N steps (resume).")
    ] = ReleaseConfig.checkpoint_every,
    backend: Annotated[str, typer.Option(help="Sampler for the rounds' reveals: hf or vllm.")] = (
        "hf"
    ),
    decoder: Annotated[
        Path | None, typer.Option(help="With --update r2f: a decoder from `rr r2f fit`.")
    ] = None,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> None:
    """Unlearn what Reveal found, round after round; write DIR/round-K/ and DIR/model/."""
    from reveal_release.release.cli_run import release_command

    cfg = ReleaseConfig(
        rounds=rounds,
        update=update,
        loss=loss,
        retain_loss=retain_loss,
        steps=steps,
        lr=lr,
        rank=rank,
        alpha=alpha,
        batch_size=batch_size,
        retain_weight=retain_weight,
        orth_weight=orth_weight,
        l2_weight=l2_weight,
        beta=beta,
        target_modules=tuple(m.strip() for m in target_modules.split(",") if m.strip()),
        reveal_budget=reveal_budget,
        stop_rate=stop_rate,
        min_retain_ratio=min_retain_ratio,
        max_ppl_ratio=max_ppl_ratio,
        converge=converge,
        probe_limit=probes,
        qa_limit=qa,
        checkpoint_every=checkpoint_every,
        seed=seed,
        extra={"decoder": str(decoder)} if decoder else {},
    )
    release_command(run=run, cfg=cfg, backend=backend, trust_remote_code=trust_remote_code)


@app.command(name="eval")
def evaluate(
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
    attacks: Annotated[
        str, typer.Option(help="all, none, or some of: " + ",".join(ALL_ATTACKS))
    ] = "all",
    baseline: Annotated[
        bool, typer.Option(help="Train the one-shot gradient-ascent baseline for the plot.")
    ] = True,
    probes: Annotated[int, typer.Option(min=0, help="Held-out probes to use (0: all).")] = 0,
    qa: Annotated[int, typer.Option(min=0, help="General QA questions (0: all).")] = 0,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Answer length per probe.")] = 64,
    relearn_samples: Annotated[int, typer.Option(min=1, help="Relearning attack data.")] = 8,
    relearn_steps: Annotated[int, typer.Option(min=1, help="Relearning attack steps.")] = 8,
    relearn_lr: Annotated[float, typer.Option(help="Relearning attack learning rate.")] = 5e-4,
    report_only: Annotated[
        bool, typer.Option(help="Rebuild the report from its metrics.json; load no model.")
    ] = False,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> None:
    """Held-out forgetting, utility and robustness attacks, with a report."""
    from reveal_release.evaluate.cli_eval import eval_command, parse_attacks
    from reveal_release.evaluate.runner import EvalSettings

    settings = EvalSettings(
        max_new_tokens=max_new_tokens,
        probe_limit=probes,
        qa_limit=qa,
        attacks=parse_attacks(attacks),
        baseline=baseline,
        relearn_samples=relearn_samples,
        relearn_steps=relearn_steps,
        relearn_lr=relearn_lr,
        seed=seed,
    )
    eval_command(
        run=run,
        model=model,
        target=target,
        base=base,
        out=out,
        settings=settings,
        report_only=report_only,
        trust_remote_code=trust_remote_code,
    )


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

    info = export_run(RunDir.load(run), out, format)
    table("export", list(info), [list(info.values())])


@r2f_app.command("fit")
def r2f_fit(
    proxy: Annotated[str, typer.Option(help="The proxy model to fit the decoder on.")],
    out: Annotated[Path, typer.Option(help="Where to save the decoder (a new folder).")],
    views: Annotated[int, typer.Option(help="Paraphrased views per prompt (1-16).")] = 4,
    rank: Annotated[int, typer.Option(help="LoRA rank r of the sketches (1-64).")] = 8,
    prompts: Annotated[int, typer.Option(min=8, help="Prompts to build pairs from.")] = 24,
    layers: Annotated[str, typer.Option(help="Comma-separated linear layer kinds.")] = ",".join(
        ReleaseConfig.target_modules
    ),
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the figures here.")
    ] = None,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> None:
    """Fit a gradient decoder on a proxy model; print held-out cosines per layer kind."""
    from reveal_release.r2f.cli_r2f import fit_command

    fit_command(
        proxy=proxy, out=out, views=views, rank=rank, prompts=prompts, layers=layers,
        json_path=json_path, seed=seed, trust_remote_code=trust_remote_code,
    )  # fmt: skip


@r2f_app.command("check")
def r2f_check(
    decoder: Annotated[Path, typer.Option(help="A fitted decoder folder.")],
    model: ModelOpt = DEFAULT_MODEL,
    prompts: Annotated[int, typer.Option(min=4, help="Held-out prompts (batches of 4).")] = 8,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the figures here.")
    ] = None,
    seed: int = 0,
    trust_remote_code: bool = False,
) -> None:
    """Held-out cosine of a decoder on a model, against the analytic baseline."""
    from reveal_release.r2f.cli_r2f import check_command

    check_command(
        decoder=decoder, model=model, prompts=prompts, json_path=json_path, seed=seed,
        trust_remote_code=trust_remote_code,
    )  # fmt: skip


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
