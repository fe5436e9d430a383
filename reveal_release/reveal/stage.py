"""The Reveal stage: search for the forget set and the retain set, and write them to the run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from reveal_release.errors import RRError
from reveal_release.models import LoadedModel
from reveal_release.reveal.dedupe import keep_distinct
from reveal_release.reveal.features import HiddenStateFeatures, make_features
from reveal_release.reveal.samplers.base import Sampler
from reveal_release.reveal.search import InstructionSearch, Pull, SearchConfig, SearchResult
from reveal_release.runs import RunDir
from reveal_release.targets.judges import make_judge
from reveal_release.targets.spec import TargetSpec, instructions_dir, read_pool


class NothingRevealed(RRError):
    """The search found no answer relevant to the target (Release reads it as: target gone)."""


@dataclass(frozen=True)
class RevealConfig:
    """Settings of one reveal: the forget search, then the retain search."""

    budget: int = 96
    retain_budget: int | None = None
    features: str = "hidden"
    strategy: str = "neuralucb"
    seed: int = 0
    alpha: float = 0.5
    max_cosine: float = 0.95
    retain_max: float = 0.2
    max_new_tokens: int = 96

    def search(self, budget: int, seed_offset: int = 0) -> SearchConfig:
        """The SearchConfig for one of the two searches."""
        return SearchConfig(
            budget=budget,
            strategy=self.strategy,
            seed=self.seed + seed_offset,
            alpha=self.alpha,
            max_new_tokens=self.max_new_tokens,
        )


@dataclass
class RevealSummary:
    """What one reveal produced, for the closing table and the manifest."""

    steps: int
    samples: int
    forget: int
    retain: int
    yield_rate: float
    forget_relevance: float
    instructions_used: int
    tokens: int
    seconds: float
    best: list[dict]

    @property
    def tokens_per_s(self) -> float:
        """Useful generated tokens per second over both searches."""
        return self.tokens / self.seconds if self.seconds else 0.0


def response_features(loaded: LoadedModel) -> Callable[[Sequence[str]], np.ndarray]:
    """The sentence embedder when installed (better for diversity), else hidden states."""
    from reveal_release import embedder

    if embedder.available():
        return lambda texts: embedder.embed(list(texts))
    return HiddenStateFeatures(loaded).texts


def _rows(pulls: list[Pull], keep: Callable[[float], bool], round_: int) -> list[dict]:
    return [
        {
            "instruction": p.instruction,
            "prompt": p.instruction,
            "response": r,
            "relevance": s,
            "round": round_,
            "step": p.step,
            "source": p.source,
        }
        for p in pulls
        for r, s in zip(p.responses, p.scores, strict=True)
        if r.strip() and keep(s)
    ]


def _log_rows(pulls: list[Pull], name: str, round_: int) -> list[dict]:
    """One bandit.jsonl line per instruction played."""
    keys = ("step", "instruction", "source", "reward", "relevance", "diversity", "ucb", "mean")
    return [
        {"set": name, "round": round_, **{k: getattr(p, k) for k in keys}, "sigma": p.sigma}
        for p in pulls
    ]


def _dedupe(rows: list[dict], feats: Callable[[Sequence[str]], np.ndarray], max_cos: float):
    if not rows:
        return rows
    texts = [r["response"] for r in rows]
    kept = keep_distinct(texts, [r["relevance"] for r in rows], feats(texts), max_cos)
    return [rows[i] for i in kept]


def run_reveal(
    loaded: LoadedModel,
    spec: TargetSpec,
    sampler: Sampler,
    run: RunDir,
    cfg: RevealConfig,
    *,
    out: str = "reveal",
    round_: int = 0,
    warm_start: str | None = None,
    on_step: Callable[[str, int, int, list[Pull]], None] | None = None,
) -> RevealSummary:
    """Search for forget and retain samples and write out/{forget,retain,bandit}.jsonl."""
    judge = make_judge(spec.judge, **spec.judge_params)
    meta_pool = read_pool(instructions_dir() / "meta.txt", spec.subject, "meta")
    inst_feats = make_features(cfg.features, loaded).instructions
    resp_feats = response_features(loaded)
    start = time.perf_counter()

    def search(name: str, pool: list[str], score, budget: int, offset: int) -> SearchResult:
        warm = run.path(warm_start, "state", f"{name}.safetensors") if warm_start else None
        s = InstructionSearch(
            pool,
            sampler,
            score,
            inst_feats,
            resp_feats,
            cfg.search(budget, offset),
            checkpoint=run.path(out, "state", f"{name}.safetensors"),
            meta_pool=meta_pool,
            warm_start=warm,
        )
        return s.run(lambda i, n, pulls: on_step and on_step(name, i, n, pulls))

    forget_res = search("forget", spec.reveal_pool, judge.score, cfg.budget, 0)
    log = _log_rows(forget_res.pulls, "forget", round_)
    run.write_jsonl(f"{out}/bandit.jsonl", log)
    forget = _dedupe(
        _rows(forget_res.pulls, lambda s: s >= spec.threshold, round_), resp_feats, cfg.max_cosine
    )
    samples = sum(len(p.responses) for p in forget_res.pulls)
    if not forget:
        best = max((p.relevance for p in forget_res.pulls), default=0.0)
        raise NothingRevealed(
            f"the model revealed nothing relevant to '{spec.identity()}' in {samples} samples "
            f"(best mean relevance {best:.2f}, threshold {spec.threshold}): raise --budget, "
            f"check the target's judge and instructions, or the model may not know the target "
            f"(the search log is in {run.path(out, 'bandit.jsonl')})"
        )

    def not_target(texts: Sequence[str]) -> list[float]:
        return [1.0 - s for s in judge.score(texts)]

    retain_budget = cfg.retain_budget if cfg.retain_budget is not None else max(cfg.budget // 2, 1)
    retain: list[dict] = []
    retain_tokens = 0
    if retain_budget > 0:  # 0: forget search only (Release rounds keep the first retain set)
        retain_res = search("retain", spec.retain_pool, not_target, retain_budget, 1)
        log += _log_rows(retain_res.pulls, "retain", round_)
        retain = _dedupe(
            _rows(retain_res.pulls, lambda s: s >= 1.0 - cfg.retain_max, round_),
            resp_feats,
            cfg.max_cosine,
        )
        retain_tokens = retain_res.tokens
        run.write_jsonl(f"{out}/retain.jsonl", retain)
    run.write_jsonl(f"{out}/forget.jsonl", forget)
    run.write_jsonl(f"{out}/bandit.jsonl", log)

    by_arm: dict[str, list[float]] = {}
    for p in forget_res.pulls:
        by_arm.setdefault(p.instruction, []).append(p.reward)
    best = sorted(
        (
            {"instruction": k, "reward": float(np.mean(v)), "pulls": len(v)}
            for k, v in by_arm.items()
        ),
        key=lambda d: -d["reward"],
    )[:5]
    all_scores = [s for p in forget_res.pulls for s in p.scores]
    return RevealSummary(
        steps=len({p.step for p in forget_res.pulls}),
        samples=samples,
        forget=len(forget),
        retain=len(retain),
        yield_rate=float(np.mean([s >= spec.threshold for s in all_scores])),
        forget_relevance=float(np.mean([r["relevance"] for r in forget])),
        instructions_used=len({r["instruction"] for r in forget}),
        tokens=forget_res.tokens + retain_tokens,
        seconds=time.perf_counter() - start,
        best=best,
    )


def summary_dict(summary: RevealSummary) -> dict:
    """The summary as JSON for the manifest."""
    return {**asdict(summary), "tokens_per_s": summary.tokens_per_s}
