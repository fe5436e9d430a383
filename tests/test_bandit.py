"""NeuralUCB, the Vendi-based reward, near-duplicate removal and instruction clean-up."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reveal_release.reveal.bandit import BanditConfig, NeuralUCB
from reveal_release.reveal.dedupe import keep_distinct
from reveal_release.reveal.mutate import clean_instruction
from reveal_release.reveal.reward import diversity, reward, vendi_score


def test_vendi_of_identical_and_orthogonal_samples():
    same = np.ones((4, 8))
    assert vendi_score(same) == pytest.approx(1.0)
    assert diversity(same) == pytest.approx(0.25)
    ortho = np.eye(4)
    assert vendi_score(ortho) == pytest.approx(4.0)
    assert diversity(ortho) == pytest.approx(1.0)


def test_vendi_matches_hand_computation_for_two_vectors():
    # Two unit vectors at cosine c: K/2 has eigenvalues (1 +- c) / 2.
    c = 0.6
    x = np.array([[1.0, 0.0], [c, np.sqrt(1 - c**2)]])
    lam = np.array([(1 + c) / 2, (1 - c) / 2])
    assert vendi_score(x) == pytest.approx(np.exp(-(lam * np.log(lam)).sum()))


def test_reward_is_the_weighted_harmonic_mean():
    assert reward(0.5, 0.5) == pytest.approx(0.5)
    assert reward(1.0, 0.25, diversity_weight=0.5) == pytest.approx(1 / (0.5 / 0.25 + 0.5 / 1.0))
    assert reward(0.0, 0.9) == 0.0
    assert reward(0.8, 0.4, diversity_weight=1.0) == pytest.approx(0.4)


def test_per_arm_gradients_match_autograd():
    bandit = NeuralUCB(5, BanditConfig(hidden=7, seed=1))
    x = torch.randn(3, 5)
    _, _, g = bandit.scores(x.numpy())
    for i in range(3):
        bandit.net.zero_grad()
        bandit.net(x[i : i + 1]).sum().backward()
        ref = torch.cat([p.grad.reshape(-1) for p in bandit.net.parameters()])
        assert torch.allclose(g[i], ref, atol=1e-6)


def test_exploration_bonus_shrinks_for_played_arms():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(6, 4)).astype(np.float32)
    bandit = NeuralUCB(4, BanditConfig(hidden=16))
    _, before, _ = bandit.scores(feats)
    bandit.update(feats[:1], np.array([0.5]))
    _, after, _ = bandit.scores(feats)
    assert after[0] < before[0]


def test_batch_selection_picks_distinct_arms():
    feats = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    picks = NeuralUCB(4).select(feats, 4)
    assert len({a for a, _, _ in picks}) == 4


def _synthetic_run(strategy: str, seed: int, steps: int = 16, k: int = 3) -> float:
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(40, 6)).astype(np.float32)
    w = rng.normal(size=6)
    true = 1 / (1 + np.exp(-2 * feats @ w))
    bandit = NeuralUCB(6, BanditConfig(seed=seed, train_steps=40, lr=1e-2))
    got = []
    for t in range(steps):
        if strategy == "random" or t < 2:
            arms = rng.choice(40, k, replace=False)
        else:
            arms = [a for a, _, _ in bandit.select(feats, k)]
        r = np.clip(true[arms] + rng.normal(0, 0.05, size=k), 0, 1)
        if strategy != "random":
            bandit.update(feats[arms], r)
        got.append(r.mean())
    return float(np.mean(got[steps // 2 :]))


def test_neuralucb_beats_random_on_a_synthetic_problem():
    ucb = np.mean([_synthetic_run("neuralucb", s) for s in range(3)])
    rand = np.mean([_synthetic_run("random", s) for s in range(3)])
    assert ucb > rand + 0.1


def test_state_round_trip_gives_the_same_scores():
    feats = np.random.default_rng(2).normal(size=(5, 3)).astype(np.float32)
    bandit = NeuralUCB(3, BanditConfig(hidden=8))
    bandit.update(feats[:2], np.array([0.1, 0.9]))
    again = NeuralUCB.from_state(bandit.config_dict(), bandit.state_dict())
    for a, b in zip(bandit.scores(feats)[:2], again.scores(feats)[:2], strict=True):
        assert np.allclose(a, b)


def test_keep_distinct_drops_exact_and_near_duplicates():
    texts = ["def f(): pass", "def  f():   pass", "print(1)", "print(2)"]
    emb = np.array([[1, 0], [1, 0], [0, 1], [0.01, 1]], dtype=np.float32)
    kept = keep_distinct(texts, [0.9, 0.8, 0.7, 0.6], emb, max_cosine=0.95)
    assert kept == [0, 2]


def test_clean_instruction():
    assert clean_instruction(
        'Rewritten instruction: "Write a Python script that sorts files."'
    ) == ("Write a Python script that sorts files.")
    assert clean_instruction("Sure! Here is one:\nWrite code") is None
    assert clean_instruction("ok") is None
