"""Model loading: every kind of spec, the GGUF cache, and every kind of bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reveal_release.errors import RRError
from reveal_release.model_cache import cache_root, entry_for
from reveal_release.models import load_model, resolve


def test_unknown_alias_names_the_choices():
    with pytest.raises(RRError, match="unknown model 'smollm9'.*smollm2-135m"):
        resolve("smollm9")


def test_missing_folder():
    with pytest.raises(RRError, match="no such file or folder: /nonexistent/model"):
        resolve("/nonexistent/model")


def test_missing_gguf_file():
    with pytest.raises(RRError, match="no such file or folder"):
        resolve("weights.gguf")


def test_file_that_is_not_gguf(tmp_path: Path):
    for name in ("model.gguf", "notes.txt"):
        f = tmp_path / name
        f.write_text("hello, I am not a model")
        with pytest.raises(RRError, match="neither a GGUF file nor a model folder"):
            resolve(str(f))


def test_folder_without_config(tmp_path: Path):
    with pytest.raises(RRError, match="not a model folder \\(no config.json\\)"):
        resolve(str(tmp_path))


def test_folder_with_only_pickled_weights(tmp_path: Path, tiny_folder: Path):
    shutil.copy(tiny_folder / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not unpickled")
    with pytest.raises(RRError, match="only pickled weights"):
        load_model(str(tmp_path))


def test_hub_id_while_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(
        RRError, match="could not get 'someorg/some-model' from the Hugging Face hub"
    ):
        load_model("someorg/some-model")


def test_broken_gguf_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("RR_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(RRError, match="could not read GGUF"):
        load_model(str(bad))
    models = tmp_path / "cache" / "models"
    assert not models.exists() or list(models.iterdir()) == []


def test_local_folder_loads_with_batched_generation_settings(tiny_folder: Path):
    loaded = load_model(str(tiny_folder), device="cpu")
    assert loaded.source.kind == "folder"
    assert loaded.tokenizer.padding_side == "left"
    assert loaded.tokenizer.pad_token is not None
    assert loaded.tokenizer.chat_template
    assert loaded.fingerprint.startswith("sha256:")
    assert load_model(str(tiny_folder)).fingerprint == loaded.fingerprint
    assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in loaded.stop_token_ids


@pytest.mark.integration
def test_embedded_model_is_cached_and_reloads_fast(embedded):
    assert embedded.source.kind == "embedded"
    assert embedded.model.config.num_hidden_layers == 30
    entry = entry_for(embedded.source.gguf, "smollm2-135m")
    assert entry.is_complete()
    again = load_model("smollm2-135m")
    assert not again.built_cache
    assert again.fingerprint == embedded.fingerprint
    # How much faster the cached load is: benchmarks/model_load.py (timings are not asserted).


@pytest.mark.integration
def test_gguf_path_resolves_like_the_alias(embedded):
    src = resolve(str(embedded.source.gguf))
    assert src.kind == "gguf" and src.gguf == embedded.source.gguf


@pytest.mark.integration
def test_corrupt_cache_entry_is_rebuilt(embedded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Copy the session's entry into a private cache, then damage it in two ways.
    src_entry = entry_for(embedded.source.gguf, "smollm2-135m")
    monkeypatch.setenv("RR_CACHE", str(tmp_path))
    entry = entry_for(embedded.source.gguf, "smollm2-135m")
    shutil.copytree(src_entry.path, entry.path)
    assert entry.is_complete()

    # Same size, garbage header: the marker looks fine but safetensors cannot parse it.
    weights = entry.path / "model.safetensors"
    with open(weights, "r+b") as f:
        f.write(b"\xff" * 64)
    loaded = load_model("smollm2-135m")
    assert loaded.built_cache
    assert entry.is_complete()
    assert cache_root() == tmp_path

    # Truncated: detected from the recorded size before loading.
    with open(weights, "r+b") as f:
        f.truncate(1000)
    assert not entry.is_complete()


def test_a_dequantised_gguf_loads_in_fp32_even_on_cuda():
    """bf16 would move every weight of a dequantised GGUF off its grid (the release keeps it)."""
    import torch

    from reveal_release.models import load_dtype

    assert load_dtype("cuda", None, "gguf") is torch.float32
    assert load_dtype("cuda", None, "embedded") is torch.float32
    assert load_dtype("cpu", None, "folder") is torch.float32
    assert load_dtype("cuda", "bfloat16", "gguf") is torch.bfloat16
