"""Shared fixtures: a session model cache, the embedded model, and a tiny random Llama."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def rr_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache for this test session, so tests never touch the user's cache."""
    path = Path(os.environ.get("RR_TEST_CACHE") or tmp_path_factory.mktemp("rr-cache"))
    os.environ["RR_CACHE"] = str(path)
    os.environ["HF_HUB_OFFLINE"] = "1"
    return path


@pytest.fixture(scope="session")
def embedded(rr_cache: Path):
    """The embedded SmolLM2-135M-Instruct, loaded once per session (dequantised on first use)."""
    from reveal_release.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def tiny_model(embedded):
    """A 2-layer random Llama with the embedded tokenizer: fast unit tests on a real shape."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from reveal_release.models import LoadedModel, stop_token_ids

    tok = embedded.tokenizer
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    return LoadedModel(
        model=model,
        tokenizer=tok,
        source=embedded.source,
        folder=embedded.folder,
        fingerprint="tiny-random",
        load_seconds=0.0,
        stop_token_ids=stop_token_ids(tok),
    )


@pytest.fixture(scope="session")
def tiny_folder(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a plain transformers folder (safetensors)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model.model.save_pretrained(path, safe_serialization=True)
    tiny_model.tokenizer.save_pretrained(path)
    return path


def run_rr(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `rr` command line in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "reveal_release.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=REPO,
    )


def build_parrot(tokenizer, text: str):
    """A real tiny Llama wired by hand to answer every prompt with `text`, then stop.

    Attention and MLP outputs are zero, so each position sees only its own token; the
    embedding gives each token of `text` its own axis (every other token shares axis 0) and
    the head maps axis i to the token after it: a bigram chain that greedy decoding follows.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    chain = tokenizer(text, add_special_tokens=False).input_ids
    assert len(set(chain)) == len(chain), "the parrot's text needs distinct tokens"
    hidden = 64
    assert len(chain) + 1 <= hidden
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, 0] = 1.0
        head = model.lm_head.weight
        head.zero_()
        head[chain[0], 0] = 20.0  # any token outside the chain (the prompt's last) starts it
        for i, tok_id in enumerate(chain):
            emb[tok_id].zero_()
            emb[tok_id, i + 1] = 1.0
            nxt = chain[i + 1] if i + 1 < len(chain) else tokenizer.eos_token_id
            head[nxt, i + 1] = 20.0
    return model
