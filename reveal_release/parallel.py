"""Several processes (`accelerate launch` or torchrun): who this one is, and the collective
steps a data-parallel release needs, all through Hugging Face Accelerate.

One process (no launcher) is rank 0 of 1, and every method here is then the identity: the
single-process path runs no collective code at all.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# How long a process waits on the others: the main process reveals and measures alone while
# the others wait at the next round's message, which takes long on a large model. A process
# that dies ends the launch (the launcher stops the rest), so a long wait hangs nothing.
WAIT = timedelta(hours=12)


def launched_world() -> int:
    """How many processes the launcher started (1 without a launcher)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def local_rank() -> int:
    """This process's index on its machine (0 without a launcher)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


@dataclass
class Processes:
    """This process's rank among `world`; the collectives go through `accelerator`."""

    rank: int = 0
    world: int = 1
    accelerator: Any = None

    @property
    def main(self) -> bool:
        """Whether this process writes the run folder and talks to the user."""
        return self.rank == 0

    @property
    def several(self) -> bool:
        """Whether other processes train beside this one."""
        return self.world > 1

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This process's part of a step's batch (every world-th example from its rank)."""
        return list(indices[self.rank :: self.world]) if self.several else list(indices)

    def split(self, indices: Sequence[int]) -> tuple[list[int], float]:
        """This process's part of examples scored by a mean over them, and the weight that makes
        the processes' mean the whole list's mean; the whole list at weight 1 when it has fewer
        examples than there are processes (each then scores all of it)."""
        if not self.several or len(indices) < self.world:
            return list(indices), 1.0
        mine = self.shard(indices)
        return mine, self.share(len(mine))

    def mean_grads(self, params: Iterable[Any]) -> None:
        """Average the parameters' gradients over the processes, in place (one all-reduce).
        A parameter without a gradient counts as a zero one."""
        if not self.several:
            return
        import torch

        plist = list(params)
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in plist]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        flat = self.accelerator.reduce(flat, reduction="mean")
        at = 0
        for p, g in zip(plist, grads, strict=True):
            n = g.numel()
            p.grad = flat[at : at + n].view_as(g).to(g.dtype)
            at += n

    def mean_list(self, tensors: Sequence[Any]) -> list[Any]:
        """Tensors (None for absent ones, kept None) averaged over the processes."""
        if not self.several:
            return list(tensors)
        return [
            None if t is None else self.accelerator.reduce(t.contiguous(), reduction="mean")
            for t in tensors
        ]

    def mean_values(self, values: Mapping[str, float]) -> dict[str, float]:
        """Logged figures (a loss per term) averaged over the processes, so that every process
        sees the same history and takes the same decisions."""
        if not self.several:
            return dict(values)
        import torch

        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        t = self.accelerator.reduce(t.to(self.accelerator.device), reduction="mean").cpu()
        return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}

    def share(self, count: float) -> float:
        """`count` over its mean across the processes (1 with one process): a process's
        token-mean loss times its share is its part of the mean over all processes' tokens."""
        if not self.several:
            return 1.0
        mean = self.mean_values({"n": float(count)})["n"]
        return float(count) / mean if mean > 0 else 1.0

    def broadcast(self, obj: Any = None) -> Any:
        """The main process's `obj`, on every process."""
        if not self.several:
            return obj
        from accelerate.utils import broadcast_object_list

        box = [obj if self.main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]


_CURRENT: Processes | None = None


def processes() -> Processes:
    """This process's place: rank 0 of 1 unless a launcher started several (WORLD_SIZE)."""
    global _CURRENT
    if _CURRENT is None:
        if launched_world() == 1:
            _CURRENT = Processes()
        else:
            import torch
            from accelerate import Accelerator
            from accelerate.utils import InitProcessGroupKwargs

            acc = Accelerator(  # ACCELERATE_USE_CPU (rr release --device cpu) wins
                cpu=not torch.cuda.is_available(),
                kwargs_handlers=[InitProcessGroupKwargs(timeout=WAIT)],
            )
            _CURRENT = Processes(acc.process_index, acc.num_processes, acc)
    return _CURRENT
