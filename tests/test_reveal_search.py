"""The instruction search on a tiny random model: steps, checkpoints, resume, warm start."""

from __future__ import annotations

from pathlib import Path

import pytest

from reveal_release.reveal.bandit import BanditConfig
from reveal_release.reveal.features import HiddenStateFeatures
from reveal_release.reveal.samplers.hf import HFSampler
from reveal_release.reveal.search import InstructionSearch, SearchConfig

POOL = [f"Write instruction number {i} about {w}" for i, w in enumerate("abcdefgh")]


def _length_score(texts):
    return [min(1.0, len(t) / 40) for t in texts]


def _search(tiny_model, ckpt: Path, warm: Path | None = None, **kw) -> InstructionSearch:
    feats = HiddenStateFeatures(tiny_model)
    cfg = SearchConfig(
        budget=24,
        samples_per_arm=2,
        arms_per_step=3,
        warmup_steps=1,
        max_new_tokens=8,
        mutate_every=0,
        bandit=BanditConfig(train_steps=20),
        **kw,
    )
    return InstructionSearch(
        POOL,
        HFSampler(tiny_model),
        _length_score,
        feats.instructions,
        feats.texts,
        cfg,
        ckpt,
        warm_start=warm,
    )


def test_search_runs_its_budget_and_logs_every_pull(tiny_model, tmp_path: Path):
    res = _search(tiny_model, tmp_path / "s.safetensors").run()
    assert len({p.step for p in res.pulls}) == 4  # 24 samples / (2 per arm * 3 arms)
    assert len(res.pulls) == 12
    assert all(len(p.responses) == 2 and 0 <= p.reward <= 1 for p in res.pulls)
    assert all(p.mean is None for p in res.pulls if p.step == 0)  # warm-up is random
    assert all(p.mean is not None for p in res.pulls if p.step > 0)
    assert res.tokens > 0


def test_killed_search_resumes_to_the_same_result(tiny_model, tmp_path: Path):
    full = _search(tiny_model, tmp_path / "full.safetensors").run()

    class Killed(Exception):
        pass

    def kill_after_two(step, steps, pulls):
        if step == 2:
            raise Killed

    ckpt = tmp_path / "killed.safetensors"
    with pytest.raises(Killed):
        _search(tiny_model, ckpt).run(kill_after_two)
    resumed = _search(tiny_model, ckpt)
    assert resumed.step == 2
    res = resumed.run()
    assert [(p.step, p.instruction, p.responses) for p in res.pulls] == [
        (p.step, p.instruction, p.responses) for p in full.pulls
    ]


def test_random_strategy_never_uses_the_bandit(tiny_model, tmp_path: Path):
    res = _search(tiny_model, tmp_path / "r.safetensors", strategy="random").run()
    assert all(p.mean is None for p in res.pulls)


def test_warm_start_keeps_what_the_earlier_round_learned(tiny_model, tmp_path: Path):
    first = tmp_path / "round1.safetensors"
    _search(tiny_model, first).run()
    second = _search(tiny_model, tmp_path / "round2.safetensors", warm=first)
    assert len(second.bandit.y) == 12  # the earlier round's rewards are its history
    assert second.step == 0


def test_cover_plays_each_instruction_once_before_any_twice(tiny_model, tmp_path: Path):
    res = _search(tiny_model, tmp_path / "c.safetensors", strategy="cover").run()
    played = [p.instruction for p in sorted(res.pulls, key=lambda p: p.step)]
    assert len(played) == 12 and all(p.mean is None for p in res.pulls)
    assert sorted(played[:8]) == sorted(POOL)  # the whole pool first (8 instructions)
    assert len(set(played[8:])) == 4


def test_the_cover_retain_search_takes_one_answer_to_each_prompt():
    from reveal_release.reveal.config import RevealConfig

    assert RevealConfig().retain_search(16) == RevealConfig().search(16, 1)  # the default
    cfg = RevealConfig(budget=32, retain_budget=44, retain_strategy="cover")
    search = cfg.retain_search(cfg.retain_samples)
    assert (search.strategy, search.samples_per_arm, search.mutate_every) == ("cover", 1, 0)
    assert search.steps * search.arms_per_step >= 44  # every retain prompt of the pool
    assert cfg.search(cfg.budget).strategy == "neuralucb"  # the forget search is unchanged


class _CountingSampler(HFSampler):
    """The real HF sampler, keeping each call's prompts and answers."""

    def __init__(self, loaded):
        super().__init__(loaded)
        self.calls = []

    def generate(self, prompts, cfg, system=None):
        gens, stats = super().generate(prompts, cfg, system)
        self.calls.append((list(prompts), [g.text for g in gens], cfg.max_new_tokens))
        return gens, stats


def _pair(tiny_model, tmp_path: Path, sampler, retain_tokens: int = 8):
    from dataclasses import replace

    forget = _search(tiny_model, tmp_path / "forget.safetensors")
    retain = _search(tiny_model, tmp_path / "retain.safetensors", seed=1)
    retain.cfg = replace(retain.cfg, budget=12, max_new_tokens=retain_tokens)
    forget.sampler = retain.sampler = sampler
    return {"forget": forget, "retain": retain}


def test_searches_side_by_side_share_one_sampler_call_per_step(tiny_model, tmp_path: Path):
    """Forget (4 steps) and retain (2 steps): 4 calls, not 6; each search gets the answers to
    its own prompts, in order; a search that samples otherwise gets calls of its own."""
    from reveal_release.reveal.together import run_together

    sampler = _CountingSampler(tiny_model)
    seen = []
    res = run_together(_pair(tiny_model, tmp_path, sampler), sampler, lambda *a: seen.append(a))
    assert len(sampler.calls) == 4
    assert [(name, i) for name, i, _, _ in seen] == [
        ("forget", 1), ("retain", 1), ("forget", 2), ("retain", 2), ("forget", 3), ("forget", 4)
    ]  # fmt: skip
    for step, (prompts, texts, _) in enumerate(sampler.calls):
        mine = [
            (p.instruction, r)
            for name in ("forget", "retain")
            for p in res[name].pulls
            if p.step == step
            for r in p.responses
        ]
        assert mine == list(zip(prompts, texts, strict=True))
    assert len(res["retain"].pulls) == 6 and len(res["forget"].pulls) == 12

    apart = _CountingSampler(tiny_model)
    run_together(_pair(tiny_model, tmp_path / "apart", apart, retain_tokens=6), apart)
    assert sorted(n for _, _, n in apart.calls) == [6, 6, 8, 8, 8, 8]


@pytest.mark.parametrize("at", [("retain", 1), ("forget", 1), ("forget", 2)])
def test_searches_side_by_side_resume_to_the_same_result(tiny_model, tmp_path: Path, at):
    """Killed after a step, or between the two searches' checkpoints of step 1 or 2 (the
    forget search a step ahead: it goes back one): the rerun ends with the same pulls."""
    from reveal_release.reveal.together import run_together

    sampler = _CountingSampler(tiny_model)
    full = run_together(_pair(tiny_model, tmp_path / "full", sampler), sampler)

    class Killed(Exception):
        pass

    def kill(name, step, steps, pulls):
        if (name, step) == at:
            raise Killed

    with pytest.raises(Killed):
        run_together(_pair(tiny_model, tmp_path / "k", sampler), sampler, kill)
    again = _pair(tiny_model, tmp_path / "k", sampler)
    assert (again["forget"].step, again["retain"].step) == (
        at[1],
        1 if at[0] == "retain" else at[1] - 1,
    )
    res = run_together(again, sampler)
    for name in ("forget", "retain"):
        assert [(p.step, p.instruction, p.responses) for p in res[name].pulls] == [
            (p.step, p.instruction, p.responses) for p in full[name].pulls
        ]
