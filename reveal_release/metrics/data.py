"""The evaluation data shipped with the package: general QA, plain text, topic questions."""

from __future__ import annotations

from pathlib import Path

from reveal_release.errors import RRError

DATA_DIR = Path(__file__).parent / "data"
QA_FILE = DATA_DIR / "general_qa.jsonl"
PLAIN_TEXT_FILE = DATA_DIR / "plain_text.txt"


def data_file(path: Path) -> Path:
    """`path`, or a one-line error when the installed package lacks it."""
    if not path.is_file():
        raise RRError(f"evaluation data {path} is missing: reinstall reveal-release")
    return path
