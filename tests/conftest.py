"""Shared fixtures: a session model cache, a tokenizer and tiny models built here (no model to
load), the embedded model for integration tests, and one tiny revealed run shared by all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import (
    FAST_RELEASE,
    build_parrot,
    copy_run,
    run_rr,
    save_model,
    tiny_llama,
    tiny_tokenizer,
    write_spec,
)


def pytest_collection_modifyitems(items: list) -> None:
    """A test that uses the embedded model is an integration test, marked or not."""
    for item in items:
        if "embedded" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def rr_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache for this test session, so tests never touch the user's cache."""
    path = Path(os.environ.get("RR_TEST_CACHE") or tmp_path_factory.mktemp("rr-cache"))
    os.environ["RR_CACHE"] = str(path)
    # Figures measured by one test session are never read by another (RR_TEST_CACHE may last).
    os.environ["RR_FIGURE_CACHE"] = str(tmp_path_factory.mktemp("rr-figures"))
    os.environ["HF_HUB_OFFLINE"] = "1"
    return path


@pytest.fixture(scope="session")
def embedded(rr_cache: Path):
    """The embedded SmolLM2-135M-Instruct, loaded once per session (dequantised on first use)."""
    from reveal_release.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def tokenizer():
    """A small BPE tokenizer with a chat template, trained on the shipped text (no model)."""
    from reveal_release.models import prepare_tokenizer

    return prepare_tokenizer(tiny_tokenizer())


@pytest.fixture(scope="session")
def tiny_model(tokenizer):
    """A 2-layer random Llama: fast unit tests on a real architecture."""
    from reveal_release.models import LoadedModel

    return LoadedModel.bare(tiny_llama(tokenizer), tokenizer)


@pytest.fixture(scope="session")
def tiny_folder(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a plain transformers folder (safetensors)."""
    return save_model(tiny_model.model, tiny_model.tokenizer, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def parrot_folder(tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The parrot (answers every prompt with a line of Python) as a transformers folder."""
    return save_model(build_parrot(tokenizer), tokenizer, tmp_path_factory.mktemp("parrot"))


@pytest.fixture(scope="session")
def revealed(tiny_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `rr reveal` of the tiny model on a threshold-0 code spec, shared read-only:
    tests that change a run work on a copy (helpers.copy_run)."""
    tmp = tmp_path_factory.mktemp("revealed")
    spec = write_spec(tmp)
    out = run_rr(
        "reveal", "--model", str(tiny_folder), "--target", str(spec), "--run", str(tmp / "run"),
        "--budget", "6", "--retain-budget", "4",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return tmp / "run"


@pytest.fixture(scope="session")
def released_run(revealed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of that run after a one-round `rr release` (FAST_RELEASE), shared read-only."""
    run = copy_run(revealed, tmp_path_factory.mktemp("released"))
    out = run_rr("release", "--run", str(run), "--rounds", "1", *FAST_RELEASE)
    assert out.returncode == 0, out.stderr
    return run
