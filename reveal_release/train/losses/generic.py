"""Generic replacement: the NLL of each forget answer with the target's spans replaced by a
generic word, so the model learns to say the same thing without the target.

After Eldan & Russinovich, "Who's Harry Potter?" (arXiv 2310.02238), who fine-tune on the
model's own text with its anchored terms swapped for generic counterparts. Here the spans are
the judge's (the person judge's names become "someone"); it needs a judge that marks spans.
Measured on person (README): the whole rewritten answer is the label. With only the replaced
words as labels the model answered "someone someone ..." to everything after 4 steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from reveal_release.errors import RRError
from reveal_release.train.losses.base import FORGET_LOSSES, ForgetLoss

GENERIC = "someone"


def replace_spans(text: str, spans: Sequence[Sequence[int]], word: str = GENERIC) -> str:
    """`text` with each character span replaced by `word` (spans in any order; one that
    overlaps an earlier one is dropped)."""
    out, pos = [], 0
    for a, b in sorted((int(a), int(b)) for a, b in spans):
        if a < pos:
            continue
        out += [text[pos:a], word]
        pos = b
    return "".join(out + [text[pos:]])


def marked_rows(rows: Sequence[dict], loss: str) -> list[dict]:
    """The rows whose answer has target spans (a one-line error when no row carries spans)."""
    if not any(r.get("focus") is not None for r in rows):
        raise RRError(
            f"--loss {loss} needs a judge that marks the target in answers (person): "
            "use --loss npo for this target"
        )
    return [r for r in rows if r.get("focus")]


def generic_rows(rows: Sequence[dict], loss: str) -> list[dict]:
    """The marked rows with their spans replaced by the generic word (focus dropped)."""
    return [
        {**r, "response": replace_spans(r["response"], r["focus"]), "focus": None}
        for r in marked_rows(rows, loss)
    ]


@FORGET_LOSSES.register("generic")
class GenericReplacement(ForgetLoss):
    """NLL of the forget answers with the judge's target spans made generic."""

    bounded = False  # an NLL: it does not fall to 0 once the target is gone
    needs_spans = True  # the release marks the target in each answer (rows' `focus`)

    def training_rows(self, rows: Sequence[dict]) -> list[dict]:
        """The answers that mark a span, rewritten; the others say nothing to learn."""
        return generic_rows(rows, "generic")

    def __call__(self, logp, n, ref_logp, cfg):
        return -logp.sum() / n.sum().clamp(min=1)
