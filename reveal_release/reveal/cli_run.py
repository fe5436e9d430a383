"""`rr reveal`: validate input, open the run, run the stage with a progress bar, print a summary."""

from __future__ import annotations

from pathlib import Path

from reveal_release.errors import RRError


def reveal_command(
    *,
    target: str,
    run: Path,
    model: str,
    budget: int,
    retain_budget: int | None,
    backend: str,
    strategy: str,
    features: str,
    seed: int,
    trust_remote_code: bool,
) -> None:
    """Everything `rr reveal` does, in the order a user's mistakes are cheapest to catch."""
    from reveal_release.console import console, progress, say, table
    from reveal_release.models import load_model, model_summary
    from reveal_release.reveal.samplers import make_sampler
    from reveal_release.reveal.search import STRATEGIES
    from reveal_release.reveal.stage import RevealConfig, run_reveal, summary_dict
    from reveal_release.runs import RunDir
    from reveal_release.targets.judges import make_judge
    from reveal_release.targets.spec import load_target

    if backend not in ("hf", "vllm"):
        raise RRError(f"unknown backend '{backend}': choose hf or vllm")
    if strategy not in STRATEGIES:
        raise RRError(f"unknown strategy '{strategy}': choose {' or '.join(STRATEGIES)}")
    spec = load_target(target)
    make_judge(spec.judge, **spec.judge_params)  # fail on a missing package before loading
    cfg = RevealConfig(
        budget=budget,
        retain_budget=retain_budget,
        features=features,
        strategy=strategy,
        seed=seed,
    )
    loaded = load_model(model, trust_remote_code=trust_remote_code, progress=True)
    rd = RunDir.open(run, {"model": loaded.fingerprint, "target": spec.identity()})
    config = {
        "model": model,
        "target": target,
        "backend": backend,
        **{k: v for k, v in cfg.__dict__.items()},
    }
    rd.manifest.setdefault("model", model_summary(loaded))
    rd.manifest["seed"] = seed
    with rd.stage("reveal", config) as st:
        if st.done:
            say(f"reveal already finished in {run}: nothing to do (forget {st.info.get('forget')})")
            return
        sampler = make_sampler(backend, loaded)
        try:
            with progress() as bar:
                tasks: dict[str, int] = {}

                def on_step(name: str, i: int, n: int, pulls: list) -> None:
                    if name not in tasks:
                        tasks[name] = bar.add_task(f"reveal {name} set", total=n)
                    best = max(p.relevance for p in pulls)
                    bar.update(
                        tasks[name], completed=i, description=f"reveal {name} (rel {best:.2f})"
                    )

                summary = run_reveal(loaded, spec, sampler, rd, cfg, on_step=on_step)
        finally:
            sampler.close()
        st.info.update(summary_dict(summary))
    table(
        f"reveal: {spec.identity()} on {model}",
        [
            "steps",
            "samples",
            "yield",
            "forget",
            "forget rel.",
            "instructions",
            "retain",
            "tok/s",
            "s",
        ],
        [
            (
                summary.steps,
                summary.samples,
                summary.yield_rate,
                summary.forget,
                summary.forget_relevance,
                summary.instructions_used,
                summary.retain,
                summary.tokens_per_s,
                summary.seconds,
            )
        ],
    )
    table(
        "best reveal instructions",
        ["reward", "pulls", "instruction"],
        [(b["reward"], b["pulls"], b["instruction"]) for b in summary.best],
    )
    console.print(f"wrote {rd.path('reveal')}/forget.jsonl, retain.jsonl, bandit.jsonl")
