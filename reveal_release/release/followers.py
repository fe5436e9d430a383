"""One release over several processes: the main process runs the rounds (reveal, measure,
decide, write the run folder) and the others train beside it, each round on their shard of
every batch, with gradients averaged through Accelerate (reveal_release.parallel).

The main process sends each round's training inputs and the adapters merged so far; the others
rebuild the same current model from those adapters, so no weights travel. The main process
alone writes: the others never touch the run folder except to read a saved training state.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.parallel import Processes, launched_world, processes
from reveal_release.release.updates import UPDATES, RoundInputs

# Update rules and gradient rules that train in one process only, with why.
ONE_PROCESS = {
    "--update r2f": "R2F decodes each process's gradients on its own",
    "--mask disruption": "its sign test needs every term's gradient of the whole batch",
}


def check_processes(cfg: Any, sync: Processes | None = None) -> int:
    """Settings that cannot train over several processes fail before any work; how many
    processes train (said when more than one)."""
    if launched_world() == 1:
        return 1
    sync = sync or processes()
    used = {"--update r2f": cfg.update == "r2f", "--mask disruption": cfg.mask == "disruption"}
    for flag, why in ONE_PROCESS.items():
        if used[flag]:
            raise RRError(f"{flag} trains in one process only ({why}): launch rr without it")
    if cfg.batch_size % sync.world:
        raise RRError(
            f"--batch-size {cfg.batch_size} does not split over {sync.world} processes: give a "
            f"multiple of {sync.world} (each process takes an equal part of every batch)"
        )
    from reveal_release.console import say

    say(f"{sync.world} processes: this one reveals, measures and writes; all train, each on "
        "its part of every batch, gradients averaged (Accelerate)")  # fmt: skip
    return sync.world


class Followers:
    """The main process's side: what the other processes train, and when they stop."""

    def __init__(self, sync: Processes | None = None):
        self.sync = sync or processes()

    def train(self, inp: RoundInputs, merged: list[tuple[str, float]]) -> None:
        """Tell the others to train round inp.round_ on M_{k-1} = base + `merged` adapters
        (each scaled by its kept fraction)."""
        if self.sync.several:
            import torch

            self.sync.broadcast({
                "kind": "train", "round": inp.round_, "forget": list(inp.forget),
                "retain": list(inp.retain), "cfg": inp.cfg, "merged": list(merged),
                "fp32": inp.model.dtype == torch.float32, "workdir": str(inp.workdir),
            })  # fmt: skip

    def stop(self) -> None:
        """Tell the others the release is over (finished, refused or failed)."""
        if self.sync.several:
            self.sync.broadcast({"kind": "stop"})


class _Model:
    """A follower's copy of M_k: the base plus the adapters merged so far, at their fractions."""

    def __init__(self, loaded: Any):
        self.loaded = loaded
        self.applied: list[tuple[str, float]] = []
        self.earlier_a: list[dict] = []

    def catch_up(self, merged: list[tuple[str, float]], fp32: bool) -> None:
        """Merge what the main process merged since the last round, as it did."""
        from reveal_release.train.lora import add_update, apply_adapter, load_a_matrices

        if fp32:
            self.loaded.model.float()
        for i, (path, fraction) in enumerate(merged):
            if i >= len(self.applied):
                self.loaded.model = apply_adapter(self.loaded.model, Path(path))
                was = 1.0
                self.earlier_a.append(load_a_matrices(Path(path)))
                self.applied.append((path, 1.0))
            else:
                was = self.applied[i][1]
            if fraction != was:
                add_update(self.loaded.model, Path(path), fraction - was)
                self.applied[i] = (path, fraction)


def follow(load: Callable[[], Any], sync: Processes | None = None) -> int:
    """A process beside the main one: train each round it is told to; the rounds it trained.
    `load` gives the base model, called at the first round (a release refused before any
    training loads nothing here)."""
    sync = sync or processes()
    model, trained = None, 0
    while True:
        msg = sync.broadcast()
        if msg["kind"] != "train":
            return trained
        model = model or _Model(load())
        cfg = msg["cfg"]
        model.catch_up(msg["merged"], msg["fp32"])
        workdir = Path(msg["workdir"])
        inp = RoundInputs(
            model=model.loaded.model, tokenizer=model.loaded.tokenizer, forget=msg["forget"],
            retain=msg["retain"], earlier_a=model.earlier_a, cfg=cfg, round_=msg["round"],
            workdir=workdir,
        )  # fmt: skip
        UPDATES.get(cfg.update)(inp, workdir / "adapter")
        trained += 1
