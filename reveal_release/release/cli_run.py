"""`rr release`: check the run, load its model, run the rounds with progress, print a table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.release.config import ReleaseConfig


def release_command(
    *, run: Path, cfg: ReleaseConfig, backend: str, trust_remote_code: bool
) -> None:
    """Everything `rr release` does, cheapest checks first."""
    from reveal_release.console import console, progress, say
    from reveal_release.models import load_model
    from reveal_release.release.losses import FORGET_LOSSES, RETAIN_LOSSES
    from reveal_release.release.rounds import check_inputs, run_release
    from reveal_release.release.updates import get_update
    from reveal_release.runs import RunDir
    from reveal_release.targets.spec import load_target

    cfg.validate()
    FORGET_LOSSES.get(cfg.loss)
    RETAIN_LOSSES.get(cfg.retain_loss)
    get_update(cfg.update)
    if cfg.update == "r2f":
        from reveal_release.r2f.decoder import load_decoder

        if not cfg.extra.get("decoder"):
            raise RRError("--update r2f needs --decoder PATH (make one with `rr r2f fit`)")
        load_decoder(Path(cfg.extra["decoder"]))  # a bad decoder fails before any work
    if backend not in ("hf", "vllm"):
        raise RRError(f"unknown backend '{backend}': choose hf or vllm")
    rd = RunDir.load(run)
    reveal_cfg = rd.manifest["stages"].get("reveal", {}).get("config") or {}
    if not rd.is_done("reveal") or not reveal_cfg:
        raise RRError(
            f"{run} has no finished reveal stage: run `rr reveal --run {run} --target ...` first"
        )
    spec = load_target(reveal_cfg["target"])
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
        if loaded.fingerprint != rd.manifest["identity"].get("model"):
            raise RRError(
                f"the model '{reveal_cfg['model']}' changed since `rr reveal` ran in {run} "
                "(its fingerprint differs): restore it or start a new run"
            )
        with progress() as bar:
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
                    desc += f" (forget {kw['forget']:.3f})"
                bar.update(tasks[key], completed=kw["step"], description=desc)

            summary = run_release(rd, loaded, spec, cfg, report=report, backend=backend)
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


def _short(text: str, n: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def print_summary(rd: Any, title: str) -> None:
    """Per-round table, then before/after: held-out reveal, retain accuracy, perplexity, answers."""
    from reveal_release.console import human_bytes, table

    base = rd.read_json("release/base-metrics.json")
    if not base:
        return
    rounds = []
    k = 1
    while rd.path(f"round-{k}").exists():
        m = rd.read_json(f"round-{k}/metrics.json")
        if m:
            rounds.append(m)
        k += 1
    rows = [("base", base["heldout_reveal_rate"], base["retain_accuracy"], base["perplexity"])]
    rows[0] += ("-",) * 5
    for r in rounds:
        rows.append(
            (
                f"{r['round']} (rolled back)" if r.get("rolled_back") else r["round"],
                r["heldout_reveal_rate"],
                r["retain_accuracy"],
                r["perplexity"],
                r["forget_size"],
                r["train_steps"],
                r["train_seconds"],
                r["round_seconds"],
                human_bytes(r["peak_rss_bytes"]),
            )
        )
    table(
        title,
        [
            "round",
            "held-out reveal",
            "retain acc.",
            "perplexity",
            "forget set",
            "steps",
            "train s",
            "round s",
            "peak RSS",
        ],
        rows,
    )
    if not rounds:
        return
    kept = [r for r in rounds if r.get("trained") and not r.get("rolled_back")]
    if not kept:
        return
    last = kept[-1]  # the model in DIR/model
    table(
        "before / after",
        ["metric", "before", f"after round {last['round']}", "after / before"],
        [
            ("held-out reveal rate", base["heldout_reveal_rate"], last["heldout_reveal_rate"], "-"),
            (
                "retain accuracy",
                base["retain_accuracy"],
                last["retain_accuracy"],
                last["retain_ratio"],
            ),
            ("perplexity", base["perplexity"], last["perplexity"], last["ppl_ratio"]),
        ],
    )
    after = {e["prompt"]: e for e in last.get("examples", [])}
    shown = [e for e in base.get("examples", []) if e["prompt"] in after]
    shown.sort(key=lambda e: after[e["prompt"]]["score"] - e["score"])
    table(
        "example answers (held-out probes)",
        ["probe", "before", "after"],
        [
            (_short(e["prompt"], 48), _short(e["response"]), _short(after[e["prompt"]]["response"]))
            for e in shown[:2]
        ],
    )
