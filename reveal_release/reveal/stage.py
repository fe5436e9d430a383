"""The Reveal stage: search for the forget set and the retain set, and write them to the run."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from reveal_release.errors import RRError
from reveal_release.models import LoadedModel
from reveal_release.reveal.config import RevealConfig
from reveal_release.reveal.dedupe import keep_distinct
from reveal_release.reveal.features import HiddenStateFeatures, make_features
from reveal_release.reveal.samplers.base import Sampler
from reveal_release.reveal.search import InstructionSearch, Pull, SearchResult
from reveal_release.reveal.search_config import SearchConfig
from reveal_release.runs import RunDir
from reveal_release.targets.judges import make_judge
from reveal_release.targets.spec import TargetSpec, instructions_dir, read_pool


class NothingRevealed(RRError):
    """The search found no answer relevant to the target (Release reads it as: target gone)."""


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
    from reveal_release import sentence_embedder

    if sentence_embedder.available():
        return lambda texts: sentence_embedder.embed(list(texts))
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


class _Searches:
    """The two searches of one reveal, sharing the sampler, the features and the run folder."""

    def __init__(self, loaded, spec, sampler, run, cfg, out, warm_start, on_step):
        self.spec, self.sampler, self.run, self.cfg, self.out = spec, sampler, run, cfg, out
        self.warm_start, self.on_step = warm_start, on_step
        self.judge = make_judge(spec.judge, **spec.judge_params)
        self.meta_pool = read_pool(instructions_dir() / "meta.txt", spec.subject, "meta")
        self.inst_feats = make_features(cfg.features, loaded).instructions
        self.resp_feats = response_features(loaded)

    def search(self, name: str, pool: list[str], score, config: SearchConfig) -> SearchResult:
        """One search (checkpointed in OUT/state/NAME.safetensors)."""
        warm = self.warm_start
        s = InstructionSearch(
            pool,
            self.sampler,
            score,
            self.inst_feats,
            self.resp_feats,
            config,
            checkpoint=self.run.path(self.out, "state", f"{name}.safetensors"),
            meta_pool=self.meta_pool,
            warm_start=self.run.path(warm, "state", f"{name}.safetensors") if warm else None,
        )
        on_step = self.on_step
        return s.run(lambda i, n, pulls: on_step and on_step(name, i, n, pulls))

    def keep(self, pulls: list[Pull], keep: Callable[[float], bool], round_: int) -> list[dict]:
        """The answers that pass `keep`, near-duplicates removed."""
        return _dedupe(_rows(pulls, keep, round_), self.resp_feats, self.cfg.max_cosine)

    def not_target(self, texts: Sequence[str]) -> list[float]:
        """The retain search's score: how far an answer is from the target."""
        return [1.0 - s for s in self.judge.score(texts)]


def _nothing_revealed(spec: TargetSpec, res: SearchResult, where: Path) -> NothingRevealed:
    samples = sum(len(p.responses) for p in res.pulls)
    best = max((p.relevance for p in res.pulls), default=0.0)
    return NothingRevealed(
        f"the model revealed nothing relevant to '{spec.identity()}' in {samples} samples "
        f"(best mean relevance {best:.2f}, threshold {spec.threshold}): raise --budget, "
        f"check the target's judge and instructions, or the model may not know the target "
        f"(the search log is in {where})"
    )


def _best_instructions(pulls: list[Pull], n: int = 5) -> list[dict]:
    by_arm: dict[str, list[float]] = {}
    for p in pulls:
        by_arm.setdefault(p.instruction, []).append(p.reward)
    ranked = (
        {"instruction": k, "reward": float(np.mean(v)), "pulls": len(v)} for k, v in by_arm.items()
    )
    return sorted(ranked, key=lambda d: -d["reward"])[:n]


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
    on_stage: Callable[[str], None] = lambda name: None,
) -> RevealSummary:
    """Search for forget and retain samples and write out/{forget,retain,bandit}.jsonl
    (`on_stage` hears each search's name as it starts)."""
    searches = _Searches(loaded, spec, sampler, run, cfg, out, warm_start, on_step)
    start = time.perf_counter()
    on_stage("forget search")
    forget_res = searches.search(
        "forget", spec.reveal_pool, searches.judge.score, cfg.search(cfg.budget)
    )
    log = _log_rows(forget_res.pulls, "forget", round_)
    run.write_jsonl(f"{out}/bandit.jsonl", log)
    forget = searches.keep(forget_res.pulls, lambda s: s >= spec.threshold, round_)
    if not forget:
        raise _nothing_revealed(spec, forget_res, run.path(out, "bandit.jsonl"))
    retain: list[dict] = []
    retain_tokens = 0
    if cfg.retain_samples > 0:  # 0: forget search only (Release rounds keep the first retain set)
        on_stage("retain search")
        retain_res = searches.search(
            "retain", spec.retain_pool, searches.not_target, cfg.retain_search(cfg.retain_samples)
        )
        log += _log_rows(retain_res.pulls, "retain", round_)
        retain = searches.keep(retain_res.pulls, lambda s: s >= 1.0 - cfg.retain_max, round_)
        retain_tokens = retain_res.tokens
        run.write_jsonl(f"{out}/retain.jsonl", retain)
    run.write_jsonl(f"{out}/forget.jsonl", forget)
    run.write_jsonl(f"{out}/bandit.jsonl", log)
    all_scores = [s for p in forget_res.pulls for s in p.scores]
    return RevealSummary(
        steps=len({p.step for p in forget_res.pulls}),
        samples=sum(len(p.responses) for p in forget_res.pulls),
        forget=len(forget),
        retain=len(retain),
        yield_rate=float(np.mean([s >= spec.threshold for s in all_scores])),
        forget_relevance=float(np.mean([r["relevance"] for r in forget])),
        instructions_used=len({r["instruction"] for r in forget}),
        tokens=forget_res.tokens + retain_tokens,
        seconds=time.perf_counter() - start,
        best=_best_instructions(forget_res.pulls),
    )


def summary_dict(summary: RevealSummary) -> dict:
    """The summary as JSON for the manifest."""
    return {**asdict(summary), "tokens_per_s": summary.tokens_per_s}
