"""The instruction search: a bandit picks instructions, the model answers, a judge scores.

One search builds one set (forget or retain). Every step is checkpointed into a single
safetensors file, so a killed search resumes at the step it was in and ends with the same
samples as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from reveal_release.atomic import atomic_write_bytes
from reveal_release.errors import RRError
from reveal_release.reveal.bandit import NeuralUCB
from reveal_release.reveal.features import standardise
from reveal_release.reveal.mutate import propose
from reveal_release.reveal.reward import diversity, reward
from reveal_release.reveal.samplers.base import Sampler, SamplingConfig
from reveal_release.reveal.search_config import STRATEGIES, SearchConfig

CHECKPOINT_FORMAT = 1


@dataclass
class Pull:
    """One instruction played at one step, with its samples and reward."""

    step: int
    arm: int
    instruction: str
    source: str
    responses: list[str]
    scores: list[float]
    new_tokens: int
    relevance: float
    diversity: float
    reward: float
    mean: float | None
    sigma: float | None

    @property
    def ucb(self) -> float | None:
        """The upper confidence bound the arm was picked with (None: random pick)."""
        return None if self.mean is None else self.mean + (self.sigma or 0.0)


@dataclass
class SearchResult:
    """Everything a finished search produced."""

    pulls: list[Pull]
    arms: list[dict]
    tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        """Useful generated tokens per second of sampling and scoring."""
        return self.tokens / self.seconds if self.seconds else 0.0


TextFeatures = Callable[[Sequence[str]], np.ndarray]
ScoreFn = Callable[[Sequence[str]], list[float]]


class InstructionSearch:
    """NeuralUCB (or uniform random) search over a growing pool of instructions; `cover`
    plays each instruction of a fixed pool in turn (the retain set's breadth)."""

    def __init__(
        self,
        pool: Sequence[str],
        sampler: Sampler,
        score: ScoreFn,
        instruction_features: TextFeatures,
        response_features: TextFeatures,
        cfg: SearchConfig,
        checkpoint: Path,
        meta_pool: Sequence[str] = (),
        warm_start: Path | None = None,
    ):
        if cfg.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}")
        self.sampler, self.score, self.cfg = sampler, score, cfg
        self.inst_feats, self.resp_feats = instruction_features, response_features
        self.meta_pool = list(meta_pool)
        self.checkpoint = Path(checkpoint)
        self.arms: list[dict] = [{"text": t, "source": "seed"} for t in pool]
        self.pulls: list[Pull] = []
        self.step = 0
        self.tokens, self.seconds = 0, 0.0
        self.bandit: NeuralUCB | None = None
        if self.checkpoint.is_file():
            self._load_checked(self.checkpoint, resume=True)
        else:
            self._init_features()
            if warm_start is not None and Path(warm_start).is_file():
                self._load_checked(Path(warm_start), resume=False)

    # -- features ----------------------------------------------------------------------
    def _init_features(self) -> None:
        raw = self.inst_feats([a["text"] for a in self.arms])
        self.feat_mean, self.feat_std = raw.mean(0), raw.std(0)
        self.feats = standardise(raw, self.feat_mean, self.feat_std).astype(np.float32)
        self.bandit = NeuralUCB(self.feats.shape[1], self.cfg.bandit)

    def _add_arms(self, texts: Sequence[str], source: str) -> None:
        if not texts:
            return
        raw = self.inst_feats(list(texts))
        self.arms += [{"text": t, "source": source} for t in texts]
        new = standardise(raw, self.feat_mean, self.feat_std).astype(np.float32)
        self.feats = np.concatenate([self.feats, new])

    # -- the loop ----------------------------------------------------------------------
    def run(self, on_step: Callable[[int, int, list[Pull]], None] | None = None) -> SearchResult:
        """Run the remaining steps; `on_step(step, steps, pulls)` reports progress."""
        while self.step < self.cfg.steps:
            t0 = time.perf_counter()
            pulls = self._play(self.step)
            self.pulls += pulls
            if self.cfg.strategy == "neuralucb":
                self.bandit.update(
                    self.feats[[p.arm for p in pulls]], np.array([p.reward for p in pulls])
                )
            self._maybe_mutate(self.step)
            self.seconds += time.perf_counter() - t0
            self.step += 1
            self._save()
            if on_step:
                on_step(self.step, self.cfg.steps, pulls)
        return SearchResult(self.pulls, self.arms, self.tokens, self.seconds)

    def _pick(self, step: int) -> list[tuple[int, float | None, float | None]]:
        k = min(self.cfg.arms_per_step, len(self.arms))
        if self.cfg.strategy == "cover":  # each instruction once before any twice
            order = np.random.default_rng([self.cfg.seed, 11]).permutation(len(self.arms))
            return [(int(order[(step * k + i) % len(order)]), None, None) for i in range(k)]
        if self.cfg.strategy == "random" or step < self.cfg.warmup_steps:
            rng = np.random.default_rng([self.cfg.seed, step, 7])
            return [(int(a), None, None) for a in rng.choice(len(self.arms), k, replace=False)]
        return list(self.bandit.select(self.feats, k))

    def _play(self, step: int) -> list[Pull]:
        chosen = self._pick(step)
        n = self.cfg.samples_per_arm
        prompts = [self.arms[a]["text"] for a, _, _ in chosen for _ in range(n)]
        sampling = SamplingConfig(
            max_new_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature,
            top_p=self.cfg.top_p,
            seed=self.cfg.seed * 100_003 + step,
            batch_size=len(prompts),
        )
        gens, stats = self.sampler.generate(prompts, sampling)
        self.tokens += stats.new_tokens
        texts = [g.text for g in gens]
        scores = [float(s) for s in self.score(texts)]
        emb = self.resp_feats(texts)
        pulls = []
        for j, (a, mean, sigma) in enumerate(chosen):
            sl = slice(j * n, (j + 1) * n)
            rel = float(np.mean(scores[sl]))
            div = diversity(emb[sl])
            pulls.append(
                Pull(
                    step=step,
                    arm=a,
                    instruction=self.arms[a]["text"],
                    source=self.arms[a]["source"],
                    responses=texts[sl],
                    scores=scores[sl],
                    new_tokens=sum(g.new_tokens for g in gens[sl]),
                    relevance=rel,
                    diversity=div,
                    reward=reward(rel, div, self.cfg.diversity_weight),
                    mean=mean,
                    sigma=sigma,
                )
            )
        return pulls

    def _maybe_mutate(self, step: int) -> None:
        every = self.cfg.mutate_every
        if not every or not self.meta_pool or (step + 1) % every:
            return
        best: dict[int, list[float]] = {}
        for p in self.pulls:
            best.setdefault(p.arm, []).append(p.reward)
        ranked = sorted(best, key=lambda a: -float(np.mean(best[a])))[:2]
        parents = [self.arms[a]["text"] for a in ranked if np.mean(best[a]) > 0]
        new = propose(
            self.sampler,
            self.meta_pool,
            parents,
            [a["text"] for a in self.arms],
            self.cfg.mutations_per_step,
            seed=self.cfg.seed * 100_003 + 50_000 + step,
        )
        self._add_arms(new, f"mutation@{step}")

    # -- checkpoint --------------------------------------------------------------------
    def _save(self) -> None:
        from safetensors.torch import save

        tensors = {f"bandit.{k}": v.contiguous() for k, v in self.bandit.state_dict().items()}
        tensors["feats"] = torch.from_numpy(np.ascontiguousarray(self.feats))
        tensors["feat_mean"] = torch.from_numpy(np.asarray(self.feat_mean, dtype=np.float32))
        tensors["feat_std"] = torch.from_numpy(np.asarray(self.feat_std, dtype=np.float32))
        meta = {
            "format": str(CHECKPOINT_FORMAT),
            "config": json.dumps(asdict(self.cfg)),
            "bandit": json.dumps(self.bandit.config_dict()),
            "arms": json.dumps(self.arms),
            "pulls": json.dumps([asdict(p) for p in self.pulls]),
            "progress": json.dumps(
                {"step": self.step, "tokens": self.tokens, "seconds": self.seconds}
            ),
        }
        atomic_write_bytes(self.checkpoint, save(tensors, metadata=meta))

    def _load_checked(self, path: Path, resume: bool) -> None:
        """_load, with a one-line error naming a damaged or foreign checkpoint."""
        from safetensors import SafetensorError

        try:
            self._load(path, resume)
        except (SafetensorError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RRError(
                f"the search checkpoint {path} is damaged ({type(exc).__name__}: {exc}): delete "
                "it to run that search from its first step"
            ) from None

    def _load(self, path: Path, resume: bool) -> None:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if meta.get("format") != str(CHECKPOINT_FORMAT):
            raise ValueError(f"unknown search checkpoint format {meta.get('format')!r}")
        state = {k[len("bandit.") :]: v for k, v in tensors.items() if k.startswith("bandit.")}
        bandit_cfg = json.loads(meta["bandit"])
        saved_arms = json.loads(meta["arms"])
        if resume:
            self.arms = saved_arms
            self.feats = tensors["feats"].numpy()
            self.feat_mean, self.feat_std = (
                tensors["feat_mean"].numpy(),
                tensors["feat_std"].numpy(),
            )
            self.pulls = [Pull(**p) for p in json.loads(meta["pulls"])]
            prog = json.loads(meta["progress"])
            self.step, self.tokens, self.seconds = prog["step"], prog["tokens"], prog["seconds"]
            self.bandit = NeuralUCB.from_state(bandit_cfg, state)
            return
        # Warm start from an earlier round: keep its grown pool and what it learned about
        # which instructions pay, but recompute features with the current model.
        known = {a["text"] for a in self.arms}
        self._add_arms([a["text"] for a in saved_arms if a["text"] not in known], "earlier-round")
        index = {a["text"]: i for i, a in enumerate(self.arms)}
        history = [(index[p["instruction"]], p["reward"]) for p in json.loads(meta["pulls"])]
        warm = NeuralUCB(self.feats.shape[1], self.cfg.bandit)
        if history:
            arms, rewards = zip(*history, strict=True)
            warm.update(self.feats[list(arms)], np.array(rewards))
        self.bandit = warm
