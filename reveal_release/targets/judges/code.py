"""The code judge: how much of a response is source code (pure standard library).

A response is cut into code and prose, and the score is the share of its non-space characters
that are code, ramped so that incidental code scores 0 and 40% code or more scores 1 (a code
block with an explanation of about the same length shows the skill as much as code alone):

    score = clip((code_share - LOW) / (HIGH - LOW), 0, 1),   LOW = 0.05, HIGH = 0.4

Code is found three ways:
1. fenced blocks (```...```, an unclosed fence runs to the end, as in a cut-off generation)
   and inline `spans`;
2. code-like lines outside fences: keywords that open a statement (def, class, import, return,
   function, SELECT, #include...), `=` assignments (not "x = 17 * 23" arithmetic), lines
   ending in ; { } or a colon after a statement head, closing brackets, shell prompts and
   symbol-dense lines; an indented line that is not a sentence counts when it sits next to code;
3. runs of two or more lines that are not sentences and that Python's `ast` parses into real
   statements or calls (not bare values such as "- apples"), so unfenced Python counts even
   without these markers.

Prose about programming ("a function takes arguments and returns a value.") has none of these
and scores near 0. Markdown headings and blank lines count for neither side.
"""

from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Sequence
from typing import Any

from reveal_release.errors import RRError
from reveal_release.targets.judges.base import JUDGES, Judge

LOW = 0.05
HIGH = 0.4

_FENCE = re.compile(r"```[^\n`]*\n?(.*?)(?:```|\Z)", re.S)
_INLINE = re.compile(r"`([^`\n]+)`")
_STATEMENT = re.compile(
    r"""^(
        def\s+\w+\s*\( | class\s+\w+\s*[(:{] | import\s+[\w.]+ | from\s+[\w.]+\s+import\b
      | return\b | yield\b | raise\s+\w+ | async\s+def\b | else\s*:$ | try\s*:$ | finally\s*:$
      | (el)?if\s+[^:]*[=<>()!.\[][^:]*:$ | (el)?if\s+(not\s+)?\w+\s*:$ | except\b[^:]*:$
      | for\s+[\w, ()]+\s+in\s+.*:$ | while\s+[^:]*:$ | with\s+\S+\(.*:$
      | @\w+ | print\s*\( | console\.\w+\( | \#include\b | \#!/ | using\s+namespace\b
      | (public|private|protected)\s+(static\s+)?(class|void|int|final|String|\w+\s*\(|\w+<)
      | (int|void|char|float|double|bool|long|auto|String)\s+\**\w+\s*[(=;,\[]
      | function\s*\w*\s*\( | (const|let|var)\s+\w+\s*[=:] | fn\s+\w+\s*[(<]
      | func\s+\w+\s*\( | package\s+[\w.]+;?$ | impl\s+\w+ | struct\s+\w+\s*[{;]
      | interface\s+\w+\s*\{ | module\.exports | export\s+(default|const|function)
      | (SELECT|INSERT\s+INTO|UPDATE|DELETE\s+FROM|CREATE\s+(TABLE|INDEX|VIEW)|ALTER\s+TABLE
         |DROP\s+TABLE|FROM|WHERE|GROUP\s+BY|ORDER\s+BY|(INNER\s+|LEFT\s+)?JOIN|VALUES)\s+\S
      | (RUN|COPY|WORKDIR|CMD|ENTRYPOINT|ENV|EXPOSE)\s+\S
      | \$\s+\w | (sudo|pip3?|npm|git|cd|ls|mkdir|rm|cp|mv|echo|cat|grep|chmod|curl)\s+[-~./"'$]
      | (for|while|if)\s.*;\s*(do|then)$ | (done|fi|esac|then|do|end|endif|end\s+if)$
      | (pip3?|npm|apt(-get)?)\s+install\b | git\s+(clone|add|commit|push|pull|init|checkout)\b
      | </?[a-zA-Z][\w-]*(\s[^>]*)?/?>$ | <[a-zA-Z][\w-]*(\s[^>]*)?> | //\s | /\* | \*/
    )""",
    re.X,
)
_ASSIGN = re.compile(r"^[A-Za-z_$][\w.$]*(\[[^\]]*\])?\s*(=|\+=|-=|\*=|/=|:=)\s*[^=\s]")
_MATH = re.compile(r"^[A-Za-z]\s*=\s*[\d\s.,+\-*/×÷()^%]+$")  # "x = 17 * 23": arithmetic
_CALL = re.compile(r"^[A-Za-z_][\w.]*\(.*\);?$")
_ENDS = re.compile(r"(;|\{|\}|\)\s*:|\]\s*:|=>|->)$")
_BRACKETS = re.compile(r"^[\]\)\}]+[;,)]*$")
_SYMBOLS = set("{}[];<>&|\\=")
_TABLE = re.compile(r"^\|.*\|$")
_PROSE_END = re.compile(r"[.!?]\"?$")
_WORD = re.compile(r"[A-Za-z]+")


def _is_sentence(line: str) -> bool:
    """Prose: five or more words ending like a sentence, or long and mostly plain words."""
    words = line.split()
    alpha = sum(1 for w in words if _WORD.fullmatch(w.strip(".,;:!?\"'()")))
    if len(words) >= 5 and _PROSE_END.search(line) and alpha >= 0.6 * len(words):
        return True
    return len(words) >= 10 and alpha >= 0.8 * len(words)


def _line_is_code(line: str) -> bool:
    """A stripped, non-empty line that reads as code."""
    if _is_sentence(line) or _TABLE.match(line) or _MATH.match(line):
        return False
    if _STATEMENT.match(line) or _ASSIGN.match(line) or _CALL.match(line):
        return True
    if _BRACKETS.match(line) or _ENDS.search(line):
        return True
    chars = _weight(line)
    symbols = sum(ch in _SYMBOLS for ch in line)
    return chars >= 4 and symbols / chars >= 0.15


def _python_statements(block: str) -> bool:
    """True when `block` parses as Python with a statement or a call, not only bare values."""
    try:
        tree = ast.parse(textwrap.dedent(block))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    # Bare expressions other than calls ("- apples", "Best,", "a - b") are lists and prose.
    return any(
        not isinstance(node, ast.Expr) or isinstance(node.value, ast.Call) for node in tree.body
    )


def _weight(line: str) -> int:
    return sum(1 for ch in line if not ch.isspace())


def _split_lines(prose: str) -> tuple[int, int]:
    """(code characters, counted characters) of text outside fences."""
    lines = prose.splitlines()
    kinds: list[str] = []  # "code", "prose", "indent" (undecided), "skip"
    for raw in lines:
        line = raw.strip()
        if not line or re.match(r"^#{1,6}\s+\w", line):
            kinds.append("skip")
        elif _line_is_code(line):
            kinds.append("code")
        elif raw[:1] in (" ", "\t") and not _is_sentence(line):
            kinds.append("indent")
        else:
            kinds.append("prose")
    # Runs of two or more non-sentence lines that parse as Python are code.
    start = None
    for i in range(len(lines) + 1):
        candidate = i < len(lines) and kinds[i] != "skip" and not _is_sentence(lines[i].strip())
        if candidate and start is None:
            start = i
        elif not candidate and start is not None:
            run = [j for j in range(start, i) if lines[j].strip()]
            arithmetic = all(_MATH.match(lines[j].strip()) for j in run)
            if len(run) >= 2 and not arithmetic and _python_statements("\n".join(lines[start:i])):
                for j in run:
                    kinds[j] = "code"
            start = None
    # Indented lines next to code are code.
    for i, kind in enumerate(kinds):
        if kind == "indent":
            near = kinds[max(0, i - 2) : i] + kinds[i + 1 : i + 3]
            kinds[i] = "code" if "code" in near else "prose"
    code = total = 0
    for raw, kind in zip(lines, kinds, strict=True):
        if kind == "skip":
            continue
        w = _weight(raw)
        total += w
        if kind == "code":
            code += w
        else:
            code += sum(_weight(m) for m in _INLINE.findall(raw))
    return code, total


def code_share(text: str) -> float:
    """The share of a text's non-space characters that are code, in [0, 1]."""
    fenced = 0
    for m in _FENCE.finditer(text):
        fenced += _weight(m.group(1))
    prose = _FENCE.sub("\n", text)
    code, total = _split_lines(prose)
    total += fenced
    return (code + fenced) / total if total else 0.0


@JUDGES.register("code")
class CodeJudge(Judge):
    """Scores 1 for a response that is mainly code, near 0 for prose (even prose about code)."""

    name = "code"
    requires = ()

    def __init__(self, low: float = LOW, high: float = HIGH, **params: Any):
        super().__init__(low=low, high=high, **params)
        unknown = sorted(set(params) - {"subject"})
        if unknown:
            raise RRError(f"code judge has no parameter {', '.join(unknown)}: it takes low, high")
        if not 0 <= low < high <= 1:
            raise RRError(f"code judge needs 0 <= low < high <= 1, got {low}, {high}")
        self.low, self.high = float(low), float(high)

    def score(self, texts: Sequence[str]) -> list[float]:
        """One score per text: the code share, ramped from `low` (0) to `high` (1)."""
        out = []
        for text in texts:
            share = code_share(text)
            out.append(min(1.0, max(0.0, (share - self.low) / (self.high - self.low))))
        return out
