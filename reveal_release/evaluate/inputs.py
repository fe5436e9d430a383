"""What `rr eval` compares: a run's base and released models and its records, or a lone model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reveal_release.models import LoadedModel
from reveal_release.runs import RunDir, round_dir
from reveal_release.targets.spec import TargetSpec, load_target


@dataclass
class EvalInputs:
    """The models and data one evaluation compares."""

    spec: TargetSpec
    base: LoadedModel | None
    released: LoadedModel | None
    forget_rows: list[dict] = field(default_factory=list)
    retain_rows: list[dict] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    bandit: list[dict] = field(default_factory=list)
    ga_steps: int = 0
    train_config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)


def round_records(rd: RunDir) -> list[dict[str, Any]]:
    """Round 0 (the base, as Release measured it) and each measured round's figures."""
    base = rd.base_metrics()
    if not base:
        return []
    keep = ("heldout_reveal_rate", "retain_accuracy", "perplexity")
    rows = [{"round": 0, **{k: base[k] for k in keep}}]
    for k in rd.rounds():
        m = rd.round_metrics(k)
        if m is None:
            break  # rounds are measured in order: nothing after an unmeasured one
        if m.get("trained"):
            rows.append(
                {
                    "round": k,
                    **{key: m[key] for key in keep},
                    "rolled_back": bool(m.get("rolled_back")),
                    "train_steps": m.get("train_steps", 0),
                    "forget_size": m.get("forget_size", 0),
                }
            )
    return rows


def bandit_records(rd: RunDir) -> list[dict[str, Any]]:
    """Every forget-set pull's reward: the first reveal (round 0) and each round's reveal."""
    files = [(0, "reveal/bandit.jsonl")]
    files += [(k, f"{round_dir(k)}/reveal/bandit.jsonl") for k in rd.rounds()]
    out = []
    for round_, rel in files:
        if not rd.path(rel).exists():
            continue
        for r in rd.read_jsonl(rel):
            if r.get("set", "forget") == "forget" and r.get("reward") is not None:
                out.append({"round": round_, "step": int(r["step"]), "reward": float(r["reward"])})
    return out


def run_inputs(run: Path, trust_remote_code: bool = False, device: str = "auto") -> EvalInputs:
    """The run's target, base model, released model (if any), forget set and records."""
    rd = RunDir.load(run, lock=True)
    from reveal_release.models import load_model

    reveal_cfg = rd.reveal_config(", or use `rr eval --model M --target T`")
    spec = load_target(reveal_cfg["target"])
    spec.probes()
    notes = []
    if not rd.has_released_model():
        notes.append(
            f"no released model in {rd.path('model')}: evaluated the base model only "
            f"(run `rr release --run {run}` to release one)"
        )
    base = load_model(reveal_cfg["model"], device=device, trust_remote_code=trust_remote_code,
                      progress=True)  # fmt: skip
    rd.check_model(base.fingerprint)
    released = None
    if rd.has_released_model():
        released = load_model(
            str(rd.path("model")), device=device, trust_remote_code=trust_remote_code
        )
    rounds = round_records(rd)
    kept = [r for r in rounds if r["round"] > 0 and not r.get("rolled_back")]
    label = f"released (round {kept[-1]['round']})" if kept else "released"
    return EvalInputs(
        spec=spec,
        base=base,
        released=released,
        forget_rows=rd.forget_set(),
        retain_rows=rd.retain_set(),
        rounds=rounds,
        bandit=bandit_records(rd),
        ga_steps=sum(int(r.get("train_steps", 0)) for r in kept),
        train_config=rd.manifest["stages"].get("release", {}).get("config") or {},
        notes=notes,
        labels={"base": f"base ({reveal_cfg['model']})", "released": label},
    )


def model_inputs(
    model: str,
    target: str,
    base: str | None = None,
    trust_remote_code: bool = False,
    device: str = "auto",
) -> EvalInputs:
    """A model outside a run, against a target; `base` (optional) gives the before figures."""
    from reveal_release.models import load_model

    spec = load_target(target)
    spec.probes()
    loaded = load_model(model, device=device, trust_remote_code=trust_remote_code, progress=True)
    before = load_model(base, device=device, trust_remote_code=trust_remote_code) if base else None
    notes = [] if base else ["no --base given: no before figures, no NLL under the original"]
    return EvalInputs(
        spec=spec,
        base=before,
        released=loaded,
        notes=notes,
        labels={"base": f"base ({base})", "released": model},
    )
