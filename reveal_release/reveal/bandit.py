"""NeuralUCB, diagonal form (Zhou et al. 2020; INSTINCT's instruction search uses it too).

f(x; theta) is an MLP d -> hidden -> 1. Each arm's exploration bonus is
sigma_a = sqrt(sum(lam * nu * g_a^2 / U)) with g_a = grad_theta f(x_a); U starts at lam and
grows by g^2 of every played arm. After each round of rewards the network is retrained from
its initial weights with Adam and MSE (weight decay lam / n), as in the reference code.

Summed over every network parameter, the raw bonus is about 10 reward units for a 576-d
input (it grows with width), so nu = 1 makes the first many steps pure exploration. We
calibrate instead: the first time the bandit scores a pool, nu is scaled so that the mean
bonus equals `explore` reward units (rewards lie in [0, 1]). Measured on the code target in
benchmarks/reveal_bandit_vs_random.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from reveal_release.reveal.search_config import BanditConfig


@contextmanager
def one_thread() -> Iterator[None]:
    """Run tiny-tensor work on one thread: many threads on a 100-unit MLP only contend."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class NeuralUCB:
    """A neural contextual bandit over arms described by feature vectors."""

    def __init__(self, dim: int, cfg: BanditConfig = BanditConfig()):
        self.cfg = cfg
        self.dim = dim
        gen = torch.Generator().manual_seed(cfg.seed)
        self.net = nn.Sequential(nn.Linear(dim, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 1))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(p.shape[-1], 1)) ** 0.5)
        self.init_params = {k: v.detach().clone() for k, v in self.net.named_parameters()}
        n_params = sum(p.numel() for p in self.init_params.values())
        self.U = torch.full((n_params,), cfg.lam)
        self.X = torch.zeros((0, dim))
        self.y = torch.zeros(0)
        self.nu_scale = torch.zeros(1)  # 0 = not calibrated yet

    # -- scoring -----------------------------------------------------------------------
    def _params(self) -> dict[str, torch.Tensor]:
        return {k: v.detach() for k, v in self.net.named_parameters()}

    def _grads(self, feats: torch.Tensor) -> torch.Tensor:
        """Per-arm gradients of f w.r.t. all parameters, flattened: (n_arms, n_params)."""
        params = self._params()

        def f(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(self.net, p, (x.unsqueeze(0),)).squeeze()

        g = vmap(grad(f), in_dims=(None, 0))(params, feats)
        return torch.cat([g[k].reshape(feats.shape[0], -1) for k in params], dim=1)

    def scores(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Predicted reward, exploration bonus and per-arm gradients for each arm."""
        x = torch.as_tensor(feats, dtype=torch.float32)
        with one_thread(), torch.no_grad():
            mean = self.net(x).squeeze(-1)
        with one_thread():
            g = self._grads(x)
        sigma = self._sigma(g, self.U)
        return mean.numpy(), sigma.numpy(), g

    def _sigma(self, g: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        raw = torch.sqrt((self.cfg.lam * self.cfg.nu * g**2 / U).sum(dim=1))
        if self.cfg.explore > 0 and float(self.nu_scale) == 0.0:
            self.nu_scale = (self.cfg.explore / raw.mean().clamp(min=1e-12)).reshape(1) ** 2
        scale = self.nu_scale if self.cfg.explore > 0 else torch.ones(1)
        return raw * torch.sqrt(scale)

    def select(self, feats: np.ndarray, k: int) -> list[tuple[int, float, float]]:
        """Pick k distinct arms by UCB; U is provisionally grown after each pick.

        Growing U by the picked arm's g^2 (before its reward is known) shrinks the bonus of
        arms like it, so one batch spreads over different instructions.
        """
        mean, _, g = self.scores(feats)
        mean_t = torch.as_tensor(mean)
        U = self.U.clone()
        chosen: list[tuple[int, float, float]] = []
        for _ in range(min(k, len(feats))):
            sigma = self._sigma(g, U)
            ucb = mean_t + sigma
            if chosen:
                ucb[[c[0] for c in chosen]] = -torch.inf
            a = int(torch.argmax(ucb))
            chosen.append((a, float(mean_t[a]), float(sigma[a])))
            U += g[a] ** 2
        return chosen

    # -- learning ----------------------------------------------------------------------
    def update(self, feats: np.ndarray, rewards: np.ndarray) -> float:
        """Record played arms' rewards, grow U, retrain from the initial weights; returns loss."""
        x = torch.as_tensor(feats, dtype=torch.float32).reshape(-1, self.dim)
        r = torch.as_tensor(rewards, dtype=torch.float32).reshape(-1)
        with one_thread():
            self.U += (self._grads(x) ** 2).sum(dim=0)
            self.X = torch.cat([self.X, x])
            self.y = torch.cat([self.y, r])
            return self._train()

    def _train(self) -> float:
        with torch.no_grad():
            for k, p in self.net.named_parameters():
                p.copy_(self.init_params[k])
        n = len(self.y)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.lam / n)
        loss = torch.tensor(0.0)
        for _ in range(self.cfg.train_steps):
            opt.zero_grad()
            loss = ((self.net(self.X).squeeze(-1) - self.y) ** 2).mean()
            loss.backward()
            opt.step()
        return float(loss.detach())

    # -- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that restore the bandit exactly (for resume and warm starts)."""
        out = {f"net.{k}": v.detach().clone() for k, v in self.net.named_parameters()}
        out.update({f"init.{k}": v.clone() for k, v in self.init_params.items()})
        out.update(U=self.U.clone(), X=self.X.clone(), y=self.y.clone())
        out["nu_scale"] = self.nu_scale.clone()
        return out

    def config_dict(self) -> dict:
        """The JSON-able config that goes with state_dict."""
        return {"dim": self.dim, **asdict(self.cfg)}

    @classmethod
    def from_state(cls, config: dict, state: dict[str, torch.Tensor]) -> NeuralUCB:
        """Rebuild a bandit saved with state_dict and config_dict."""
        cfg = BanditConfig(**{k: v for k, v in config.items() if k != "dim"})
        bandit = cls(int(config["dim"]), cfg)
        with torch.no_grad():
            for k, p in bandit.net.named_parameters():
                p.copy_(state[f"net.{k}"])
        bandit.init_params = {k: state[f"init.{k}"].clone() for k in bandit.init_params}
        bandit.U, bandit.X, bandit.y = state["U"].clone(), state["X"].clone(), state["y"].clone()
        bandit.nu_scale = state["nu_scale"].clone()
        return bandit
