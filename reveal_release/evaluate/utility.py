"""What a model must keep: short general-knowledge QA accuracy and plain-English perplexity."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.generation import generate
from reveal_release.models import LoadedModel

DATA_DIR = Path(__file__).parent / "data"
QA_FILE = DATA_DIR / "general_qa.jsonl"
PLAIN_TEXT_FILE = DATA_DIR / "plain_text.txt"


@dataclass(frozen=True)
class QAItem:
    """One question and its accepted short answers (lower case, with aliases)."""

    question: str
    answers: tuple[str, ...]


@dataclass
class QAResult:
    """Greedy QA accuracy over a question set, with each question's answer."""

    accuracy: float
    correct: int
    total: int
    rows: list[dict[str, Any]] = field(default_factory=list)


def _data_file(path: Path) -> Path:
    if not path.is_file():
        raise RRError(f"evaluation data {path} is missing: reinstall reveal-release")
    return path


def load_qa(path: Path | None = None) -> list[QAItem]:
    """Questions from a JSONL file, in file order; the bundled general-knowledge set by default."""
    path = QA_FILE if path is None else path
    items = []
    lines = _data_file(path).read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            items.append(QAItem(str(obj["question"]), tuple(str(a) for a in obj["answers"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RRError(
                f"{path} line {n} is not a question record ({exc}): "
                'fix it to {"question": ..., "answers": [...]}'
            ) from None
    return items


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
    batch_size: int = 16,
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


def plain_text() -> str:
    """The bundled plain English prose (everyday topics, no code) used for perplexity."""
    return _data_file(PLAIN_TEXT_FILE).read_text(encoding="utf-8")


def perplexity(
    loaded: LoadedModel, text: str | None = None, window: int = 256, stride: int = 256
) -> float:
    """exp(mean next-token NLL) of the text, scored in windows of `window` tokens."""
    import torch

    if window < 2 or stride < 1 or stride > window:
        raise RRError(
            f"bad perplexity window {window} / stride {stride}: use 1 <= stride <= window"
        )
    text = plain_text() if text is None else text
    ids = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    if ids.numel() < 2:
        raise RRError("text for perplexity has fewer than 2 tokens: pass a longer text")
    model, device = loaded.model, loaded.device
    total_nll, counted, scored_to = 0.0, 0, 1  # token 0 is never predicted
    with torch.inference_mode():
        for start in range(0, ids.numel() - 1, stride):
            chunk = ids[start : start + window]
            if chunk.numel() < 2:
                break
            logits = model(chunk.unsqueeze(0).to(device)).logits[0, :-1].float()
            targets = chunk[1:].to(device)
            # With overlapping windows, count only tokens no earlier window predicted.
            new = max(0, start + chunk.numel() - max(scored_to, start + 1))
            if new:
                nll = torch.nn.functional.cross_entropy(
                    logits[-new:], targets[-new:], reduction="sum"
                )
                total_nll += float(nll)
                counted += new
            scored_to = start + chunk.numel()
            if scored_to >= ids.numel():
                break
    return math.exp(total_nll / counted)
