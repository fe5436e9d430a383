"""The Release loop: round k reveals again, trains module k, merges it, measures, decides."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reveal_release.atomic import atomic_dir, atomic_write_json
from reveal_release.console import peak_rss_bytes
from reveal_release.errors import RRError
from reveal_release.models import LoadedModel
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.lora import apply_adapter, delta_weights, load_a_matrices
from reveal_release.release.measure import measure, ratios
from reveal_release.release.trainer import TrainResult
from reveal_release.release.updates import RoundInputs, get_update
from reveal_release.runs import RunDir
from reveal_release.targets.spec import TargetSpec

Report = Callable[..., None]


@dataclass
class ReleaseSummary:
    """What a release did: base figures, one entry per round, why it stopped."""

    base: dict[str, Any]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    seconds: float = 0.0


def round_dir(k: int) -> str:
    """The run-relative folder of round k."""
    return f"round-{k}"


def check_inputs(run: RunDir, spec: TargetSpec, cfg: ReleaseConfig) -> tuple[list, list]:
    """The forget and retain sets of the run's reveal stage, or a one-line error."""
    if not run.is_done("reveal"):
        raise RRError(
            f"{run.root} has no finished reveal stage: run `rr reveal --run {run.root} "
            "--target ...` first"
        )
    forget = run.read_jsonl("reveal/forget.jsonl")
    if not forget:
        raise RRError(
            f"the forget set {run.path('reveal/forget.jsonl')} is empty: rerun `rr reveal` "
            "with a larger --budget"
        )
    if not any(r.get("relevance", 0.0) >= spec.threshold for r in forget):
        raise RRError(
            f"no answer in {run.path('reveal/forget.jsonl')} reaches the target's threshold "
            f"{spec.threshold}: the model showed nothing to forget; check the target"
        )
    retain = (
        run.read_jsonl("reveal/retain.jsonl") if run.path("reveal/retain.jsonl").exists() else []
    )
    if not retain and cfg.retain_weight > 0:
        raise RRError(
            f"the retain set {run.path('reveal/retain.jsonl')} is empty: rerun `rr reveal` with "
            "a larger --retain-budget, or pass --retain-weight 0"
        )
    return forget, retain


def save_model(run: RunDir, loaded: LoadedModel, round_: int) -> None:
    """Write DIR/model: the merged model with its tokenizer, plain transformers format."""
    with atomic_dir(run.path("model")) as tmp:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        atomic_write_json(
            tmp / "rr-model.json", {"round": round_, "base_fingerprint": loaded.fingerprint}
        )


def _interference(run: RunDir, k: int, cfg: ReleaseConfig) -> float | None:
    """Mean |cosine| between round k's update and each earlier round's, over modules."""
    if k < 2:
        return None
    cur = delta_weights(run.path(round_dir(k), "adapter"), cfg.scaling)
    cosines = []
    for j in range(1, k):
        folder = run.path(round_dir(j), "adapter")
        if not folder.exists():
            continue
        prev = delta_weights(folder, cfg.scaling)
        for name, d in cur.items():
            if name in prev:
                p = prev[name]
                denom = float(d.norm() * p.norm())
                if denom > 0:
                    cosines.append(abs(float((d * p).sum())) / denom)
    return sum(cosines) / len(cosines) if cosines else None


def _probe_args(cfg: ReleaseConfig) -> tuple[int, int, int]:
    return cfg.probe_max_new_tokens, cfg.probe_limit, cfg.qa_limit


def _trained(run: RunDir, k: int) -> TrainResult | None:
    """Round k's training result when a killed run had already saved its adapter."""
    data = run.read_json(f"{round_dir(k)}/train-result.json")
    return TrainResult(**data) if data else None


def _decide(m: dict[str, Any], cfg: ReleaseConfig, k: int) -> tuple[str, str]:
    """(kind, reason) to stop after round k; ('', '') to go on. Utility comes first."""
    if m.get("train_stopped"):
        why = f"round {k} training stopped ({m['train_stopped']}): kept the last good weights"
        return "train", why
    rate = m["heldout_reveal_rate"]
    if m["retain_ratio"] < cfg.min_retain_ratio or m["ppl_ratio"] > cfg.max_ppl_ratio:
        return "budget", (
            f"utility budget spent in round {k}: retain {m['retain_ratio']:.2f}x "
            f"(min {cfg.min_retain_ratio}), perplexity {m['ppl_ratio']:.2f}x "
            f"(max {cfg.max_ppl_ratio}), held-out reveal rate {rate:.2f}"
        )
    if rate <= cfg.stop_rate:
        return "gone", f"target gone: held-out reveal rate {rate:.2f} <= {cfg.stop_rate}"
    if k >= cfg.rounds:
        return "rounds", f"{k} rounds done (held-out reveal rate {rate:.2f})"
    return "", ""


def run_release(
    run: RunDir,
    base: LoadedModel,
    spec: TargetSpec,
    cfg: ReleaseConfig,
    *,
    report: Report | None = None,
    backend: str = "hf",
) -> ReleaseSummary:
    """Run (or resume) the rounds; every finished round survives a kill."""
    from reveal_release.reveal.samplers import make_sampler
    from reveal_release.reveal.stage import NothingRevealed, RevealConfig, run_reveal
    from reveal_release.targets.judges import make_judge

    def say(kind: str, **kw: Any) -> None:
        if report:
            report(kind, **kw)

    start = time.perf_counter()
    forget0, retain = check_inputs(run, spec, cfg)
    update = get_update(cfg.update)
    judge = make_judge(spec.judge, **spec.judge_params)
    current = base
    with run.stage("release-base") as st:
        if not st.done:
            say("phase", round=0, phase="measuring the base model")
            st.info.update(measure(base, spec, judge, *_probe_args(cfg)))
            run.write_json("release/base-metrics.json", st.info)
        base_metrics = st.info
    summary = ReleaseSummary(base=base_metrics)
    earlier_a: list[dict] = []
    for k in range(1, cfg.rounds + 1):
        folder = run.path(round_dir(k))
        with run.stage(round_dir(k)) as st:
            if st.done:
                summary.rounds.append(st.info)
                if st.info.get("trained") and not st.info.get("rolled_back"):
                    say("phase", round=k, phase="rebuilding from the saved adapter")
                    current = dataclasses.replace(
                        current, model=apply_adapter(current.model, folder / "adapter")
                    )
                    earlier_a.append(load_a_matrices(folder / "adapter"))
                more = st.info.get("stop_kind") == "rounds" and k < cfg.rounds
                if st.info.get("stop") and not more:  # a later --rounds may extend a run
                    summary.stop_reason = st.info["stop"]
                    break
                continue
            t0 = time.perf_counter()
            # 1. Reveal again from the current model (round 1 uses the run's reveal stage).
            if k == 1:
                forget = forget0
            elif run.path(round_dir(k), "forget.jsonl").exists():
                forget = run.read_jsonl(f"{round_dir(k)}/forget.jsonl")
            else:
                say("phase", round=k, phase="revealing from the current model")
                rcfg = RevealConfig(
                    budget=cfg.reveal_budget,
                    retain_budget=0,
                    seed=cfg.seed + k,
                    max_new_tokens=cfg.reveal_max_new_tokens,
                )
                sampler = make_sampler(backend, current)
                try:
                    warm = "reveal" if k == 2 else f"{round_dir(k - 1)}/reveal"
                    run_reveal(
                        current,
                        spec,
                        sampler,
                        run,
                        rcfg,
                        out=f"{round_dir(k)}/reveal",
                        round_=k,
                        warm_start=warm if run.path(warm, "state").exists() else None,
                        on_step=lambda name, i, n, pulls, k=k: say(
                            "reveal", round=k, step=i, total=n
                        ),
                    )
                except NothingRevealed as exc:
                    stop = f"round {k}: {exc}".split(" (")[0]
                    st.info.update(round=k, trained=False, stop=stop, stop_kind="nothing")
                    summary.rounds.append(st.info)
                    summary.stop_reason = st.info["stop"]
                    break
                finally:
                    sampler.close()
                forget = run.read_jsonl(f"{round_dir(k)}/reveal/forget.jsonl")
            run.write_jsonl(f"{round_dir(k)}/forget.jsonl", forget)
            # 2-3. Train module k (or decode it, for r2f) and save it in PEFT format.
            say("phase", round=k, phase=f"training ({cfg.update}, {cfg.loss})")
            adapter = folder / "adapter"
            result = _trained(run, k) if adapter.exists() else None
            result = result or update(
                RoundInputs(
                    model=current.model,
                    tokenizer=current.tokenizer,
                    forget=forget,
                    retain=retain,
                    earlier_a=earlier_a,
                    cfg=cfg,
                    round_=k,
                    workdir=folder,
                    on_step=lambda step, entry, k=k: say(
                        "train", round=k, total=cfg.steps, **entry
                    ),
                ),
                adapter,
            )
            train_seconds = result.seconds
            run.write_json(f"{round_dir(k)}/train-result.json", dataclasses.asdict(result))
            for stale in ("train-state.json", "train-state.safetensors"):
                (folder / stale).unlink(missing_ok=True)
            # 4. Merge it.
            current = dataclasses.replace(current, model=apply_adapter(current.model, adapter))
            earlier_a.append(load_a_matrices(adapter))
            # 5. Measure and decide.
            say("phase", round=k, phase="measuring")
            m = measure(current, spec, judge, *_probe_args(cfg))
            m.update(ratios(m, base_metrics))
            m.update(
                round=k,
                trained=True,
                forget_size=len(forget),
                train_steps=result.steps,
                train_seconds=train_seconds,
                train_stopped=result.stopped,
                resumed_from_step=result.resumed_from,
                final_losses=result.history[-1] if result.history else {},
                interference=_interference(run, k, cfg),
                round_seconds=time.perf_counter() - t0,
                peak_rss_bytes=peak_rss_bytes(),
            )
            m["stop_kind"], m["stop"] = _decide(m, cfg, k)
            if m["stop_kind"] == "budget" and k > 1:
                # Keep the last model within the utility budget: round k is measured and
                # kept on disk, but not merged into DIR/model, exported or built upon.
                m["rolled_back"] = True
                m["stop"] += f": rolled back to round {k - 1}"
            run.write_json(f"{round_dir(k)}/metrics.json", m)
            if not m.get("rolled_back"):
                say("phase", round=k, phase="saving the merged model")
                save_model(run, current, k)
            st.info.update({key: v for key, v in m.items() if key != "examples"})
            summary.rounds.append(st.info)
            if m["stop"]:
                summary.stop_reason = m["stop"]
                break
    summary.seconds = time.perf_counter() - start
    return summary
