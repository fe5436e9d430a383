"""Judges score how much a response shows the target, in [0, 1]."""

from reveal_release.targets.judges.base import JUDGES, Judge, judge_class, make_judge

__all__ = ["JUDGES", "Judge", "judge_class", "make_judge"]
