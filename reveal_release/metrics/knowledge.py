"""Question-answer probes with expected answers for a target (RWKU-style knowledge checks)."""

from __future__ import annotations

import re
from pathlib import Path

from reveal_release.metrics.data import DATA_DIR
from reveal_release.metrics.qa import QAItem, load_qa
from reveal_release.targets.spec import TargetSpec


def slug(text: str) -> str:
    """Lower-case words joined by hyphens: 'Harry Potter' -> 'harry-potter'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def topic_qa_file(spec: TargetSpec) -> Path | None:
    """The spec's [heldout] qa file, else a shipped set for its subject, else None."""
    if spec.heldout_qa:
        return Path(spec.heldout_qa)
    if spec.subject:
        shipped = DATA_DIR / f"topic-{slug(spec.subject)}.jsonl"
        if shipped.is_file():
            return shipped
    return None


def shipped_subjects() -> list[str]:
    """Subjects that come with knowledge questions."""
    return sorted(p.stem.removeprefix("topic-") for p in DATA_DIR.glob("topic-*.jsonl"))


def topic_qa_items(spec: TargetSpec) -> tuple[list[QAItem], str]:
    """The target's knowledge questions, or ([], the reason there are none)."""
    path = topic_qa_file(spec)
    if path is None:
        if not spec.subject:
            return [], f"target '{spec.identity()}' is not a subject: no knowledge questions apply"
        return [], (
            f"no knowledge questions for '{spec.subject}' (shipped: "
            f'{", ".join(shipped_subjects())}); add `qa = "FILE.jsonl"` under [heldout] '
            "in a target spec"
        )
    return load_qa(path), ""
