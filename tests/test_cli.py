"""The real `rr` command line, run as a subprocess."""

from __future__ import annotations

import pytest
from helpers import run_rr


def test_help_lists_every_command():
    out = run_rr("--help")
    assert out.returncode == 0
    for cmd in ("reveal", "release", "eval", "export", "r2f", "models", "generate"):
        assert cmd in out.stdout


def test_bad_model_is_one_clear_line():
    out = run_rr("generate", "--model", "no-such-model", "hi")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rr: error: unknown model 'no-such-model'")


@pytest.mark.integration
def test_models_marks_embedded(embedded):
    out = run_rr("models")
    assert out.returncode == 0
    assert "smollm2-135m (default) *" in out.stdout
    assert "* embedded" in out.stdout


@pytest.mark.integration
def test_generate_prints_answers_and_tokens_per_second(embedded):
    out = run_rr(
        "generate", "What is the capital of France?", "Name a colour.", "--max-new-tokens", "24"
    )
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout
    assert "tokens/s" in out.stdout
