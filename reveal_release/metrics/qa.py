"""Question answering: greedy short answers matched against accepted answers."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.generation import generate
from reveal_release.metrics.data import QA_FILE, data_file
from reveal_release.models import LoadedModel


@dataclass(frozen=True)
class QAItem:
    """One question, its accepted short answers (lower case, with aliases) and the targets it
    is about (a person release is meant to forget who wrote Romeo and Juliet)."""

    question: str
    answers: tuple[str, ...]
    about: tuple[str, ...] = ()


@dataclass
class QAResult:
    """Greedy QA accuracy over a question set, with each question's answer."""

    accuracy: float
    correct: int
    total: int
    rows: list[dict[str, Any]] = field(default_factory=list)


def load_qa(path: Path | None = None) -> list[QAItem]:
    """Questions from a JSONL file, in file order; the bundled general-knowledge set by default."""
    path = QA_FILE if path is None else path
    items = []
    lines = data_file(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            about = obj.get("about", [])
            if not isinstance(about, list):
                raise TypeError(f"'about' must be a list of target names, not {about!r}")
            items.append(
                QAItem(
                    str(obj["question"]),
                    tuple(str(a) for a in obj["answers"]),
                    tuple(str(a) for a in about),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise RRError(
                f"{path} line {n} is not a question record ({exc}): "
                'fix it to {"question": ..., "answers": [...]}'
            ) from None
    return items


def retain_items(target: Sequence[str], limit: int = 0) -> tuple[list[QAItem], list[QAItem]]:
    """The general questions a release must keep answering (the first `limit`, 0: all), and
    those left out because they are about the target (`target`: the spec's name and identity)."""
    kept, left_out = [], []
    for it in load_qa():
        (left_out if set(it.about) & set(target) else kept).append(it)
    return (kept[:limit] if limit else kept), left_out


def answer_matches(answer: str, accepted: Sequence[str]) -> bool:
    """True when any accepted answer occurs in `answer` as whole words, ignoring case."""
    text = answer.lower()
    for a in accepted:
        a = a.strip().lower()
        # Hyphens join words ("twenty-five" is not "five") and "18.0" holds no "0" or "18".
        pattern = rf"(?<![\w-])(?<!\d[.,]){re.escape(a)}(?![\w-])(?![.,]\d)"
        if a and re.search(pattern, text):
            return True
    return False


def qa_accuracy(
    loaded: LoadedModel,
    items: Sequence[QAItem] | None = None,
    max_new_tokens: int = 24,
    batch_size: int = 64,
) -> QAResult:
    """Share of questions whose greedy answer contains an accepted answer."""
    items = list(items) if items is not None else load_qa()
    if not items:
        raise RRError("no QA items to score: pass at least one question")
    gens, _ = generate(
        loaded, [it.question for it in items], max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    rows = [
        {"question": it.question, "answer": g.text, "correct": answer_matches(g.text, it.answers)}
        for it, g in zip(items, gens, strict=True)
    ]
    correct = sum(r["correct"] for r in rows)
    return QAResult(correct / len(rows), correct, len(rows), rows)
