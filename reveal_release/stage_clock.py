"""Where a command's time went: named stages timed back to back, printed as a short table."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class StageClock:
    """Times stages in order: `mark(name)` ends the running stage and starts the next one."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, float]] = []
        self._name: str | None = None
        self._since = 0.0
        self._start = time.perf_counter()

    def mark(self, name: str) -> None:
        """End the running stage (if any) and start `name`."""
        now = time.perf_counter()
        if self._name is not None:
            self.rows.append((self._name, now - self._since))
        self._name, self._since = name, now

    def stop(self) -> None:
        """End the running stage."""
        if self._name is not None:
            self.rows.append((self._name, time.perf_counter() - self._since))
            self._name = None

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage, then go back to none running."""
        self.mark(name)
        try:
            yield
        finally:
            self.stop()

    def add(self, rows: list[tuple[str, float]], prefix: str = "") -> None:
        """Take another clock's rows (a sub-command's), names prefixed."""
        self.rows += [(prefix + name, s) for name, s in rows]

    def totals(self) -> list[tuple[str, float]]:
        """The stages in first-seen order, repeated names summed."""
        out: dict[str, float] = {}
        for name, s in self.rows:
            out[name] = out.get(name, 0.0) + s
        return list(out.items())

    @property
    def seconds(self) -> float:
        """Wall time since the clock was made."""
        return time.perf_counter() - self._start

    def print(self, title: str) -> None:
        """The table of stages: seconds and share of the command's wall time."""
        from reveal_release.console import table

        self.stop()
        wall = self.seconds
        rows = [[name, f"{s:.1f}", f"{s / wall:.0%}" if wall else "-"] for name, s in self.totals()]
        rows.append(["total (wall)", f"{wall:.1f}", "100%"])
        table(f"time by stage: {title}", ["stage", "s", "share"], rows)
