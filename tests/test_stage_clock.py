"""The stage clock behind each command's closing "time by stage" table."""

from __future__ import annotations

import time


def test_stages_are_timed_back_to_back_and_repeats_summed(capsys) -> None:
    from reveal_release.stage_clock import StageClock

    clock = StageClock()
    clock.mark("load")
    time.sleep(0.01)
    clock.mark("train")
    clock.mark("load")  # a second visit adds to the first
    with clock.stage("report"):
        pass
    assert [name for name, _ in clock.rows] == ["load", "train", "load", "report"]
    totals = dict(clock.totals())
    assert list(totals) == ["load", "train", "report"]
    assert totals["load"] >= 0.01 and sum(totals.values()) <= clock.seconds
    inner = StageClock()
    inner.mark("search")
    inner.stop()
    clock.add(inner.rows, "reveal: ")
    assert clock.totals()[-1][0] == "reveal: search"
    clock.print("rr test")
    out = capsys.readouterr().out
    assert "time by stage: rr test" in out and "total (wall)" in out and "reveal: search" in out
