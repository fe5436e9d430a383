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
