"""A relearning attacker inside training, for tamper-resistant rounds.

The attack `rr eval` runs after a release (a fresh LoRA module fine-tuned a few steps on forget
answers) is simulated during each training step: a fresh rank-r delta s B A on every adapted
layer, added to the layer's output by a forward hook (so it is not part of the trained module),
takes `steps` Adam steps on the step's forget batch (answer NLL). The defender's forget loss is
then also taken with that delta on: its gradient at the point relearning would reach, the
first-order form of tamper-resistant training (Tamirisa et al. 2024, arXiv 2408.00761; Fan et al.
2025 motivate the same goal with SAM's one-step perturbation). Only the defender is updated; the
attacker is drawn afresh every step, as a real attacker would start from the release.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from reveal_release.train.config import LoraSpec
from reveal_release.train.lora import lora_layers

# The relearning attacker's module: LoRA of the usual shape (rank 8, alpha 32, every
# projection), in `rr eval`'s attack and in the attacker simulated during training.
ATTACKER_LORA = LoraSpec(rank=8, alpha=32.0)


class RelearnAdversary:
    """A rank-r LoRA delta on linear layers (a PEFT model's adapted ones, or R2F's), trained to
    relearn."""

    def __init__(self, layers: Sequence[Any], spec: LoraSpec, lr: float, steps: int, seed: int):
        """`layers`: the linear modules to attack (PEFT LoRA layers or plain nn.Linear)."""
        import torch

        self.layers = list(layers)
        self.scale, self.lr, self.steps, rank = spec.scaling, lr, steps, spec.rank
        self.seed = seed
        self.factors = []
        for mod in self.layers:
            w = getattr(mod, "base_layer", mod).weight
            a = torch.zeros(rank, w.shape[1], device=w.device, dtype=w.dtype)
            b = torch.zeros(w.shape[0], rank, device=w.device, dtype=w.dtype)
            self.factors.append((a.requires_grad_(), b.requires_grad_()))

    @classmethod
    def on_peft(
        cls, peft_model: Any, spec: LoraSpec, lr: float, steps: int, seed: int
    ) -> RelearnAdversary:
        """An attacker on the adapted layers of a PEFT model."""
        return cls(list(lora_layers(peft_model).values()), spec, lr, steps, seed)

    def params(self) -> list[Any]:
        """The attacker's tensors (A and B of every layer)."""
        return [t for pair in self.factors for t in pair]

    def reset(self, step: int = 0) -> None:
        """A fresh attacker: B = 0, A uniform in +-1/sqrt(d_in) (PEFT's Kaiming default), drawn
        from (seed, step) so that a resumed run draws the same attackers."""
        import torch

        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        with torch.no_grad():
            for a, b in self.factors:
                bound = a.shape[1] ** -0.5
                fresh = torch.rand(a.shape, generator=gen) * (2 * bound) - bound
                a.copy_(fresh.to(a.device, a.dtype))
                b.zero_()

    @contextmanager
    def active(self, train: bool = False) -> Iterator[None]:
        """Forward passes with the attacker's delta on (its tensors detached unless `train`)."""
        import torch.nn.functional as F

        def hook(pair: tuple) -> Callable:
            def add(module: Any, inputs: tuple, output: Any) -> Any:
                a, b = pair if train else (pair[0].detach(), pair[1].detach())
                x = inputs[0].to(a.dtype)
                return output + self.scale * F.linear(F.linear(x, a), b).to(output.dtype)

            return add

        pairs = zip(self.layers, self.factors, strict=True)
        handles = [m.register_forward_hook(hook(p)) for m, p in pairs]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def attack(self, nll: Callable[[], Any], step: int = 0, sync: Any = None) -> None:
        """Step `step`'s fresh attacker, then `steps` Adam steps on nll() (the forget answers'
        NLL). With `sync` of several processes each step takes the mean of their gradients,
        so every process trains the same attacker on the whole batch."""
        import torch

        self.reset(step)
        params = self.params()
        opt = torch.optim.Adam(params, lr=self.lr)
        for _ in range(self.steps):
            with self.active(train=True):
                loss = nll()
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            if sync is not None:
                sync.mean_grads(params)
            opt.step()
        for p in params:
            p.grad = None
