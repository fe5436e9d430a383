"""Helpers the test files share: the real `rr` in a subprocess, specs, run copies, hand-built
models (a tiny random Llama, the parrot) and a tokenizer trained here, with no model to load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The parrot's answer: code the `code` judge scores 1.0 (a def that parses).
PARROT_CODE = "def double(n): return 2 * n"
# A one-round release of the tiny revealed run in seconds (the `released_run` fixture).
FAST_RELEASE = ["--steps", "4", "--probes", "3", "--qa", "4", "--batch-size", "2"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def run_rr(*args: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the real `rr` command line in a subprocess and wait for it."""
    return subprocess.run(
        [sys.executable, "-m", "reveal_release", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )


def popen_rr(*args: str) -> subprocess.Popen:
    """Start the real `rr` in the background (output discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "reveal_release", *args],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 900) -> None:
    """SIGKILL the process as soon as `ready()` holds (it must still be running then).

    The timeout is only a safety net: the test waits on what it needs (a file, a status), so
    a slow machine makes it slower, never wrong.
    """
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before the kill: make it longer"
    assert ready(), "the run never reached the point to kill it at"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def stage_status(run: Path, stage: str) -> str:
    """A stage's status in the run's manifest ('' when absent or being written)."""
    try:
        return json.loads((run / "run.json").read_text())["stages"].get(stage, {}).get("status", "")
    except ValueError:
        return ""


def write_spec(
    folder: Path, *, threshold: float = 0.0, heldout: bool = True, name: str = "anything"
) -> Path:
    """A target spec on the shipped code pools and the code judge.

    Threshold 0 lets a random model's text through (every reveal rate is then 1.0);
    threshold 0.5 (the built-in) makes the judge say no to anything but code.
    """
    spec = folder / f"{name}.toml"
    spec.write_text(
        f'name = "{name}"\nthreshold = {threshold}\n[judge]\nname = "code"\n'
        '[reveal]\npool = "code.txt"\n[retain]\npool = "retain.txt"\n'
        + ('[heldout]\npool = "heldout/code.txt"\n' if heldout else "")
    )
    return spec


def copy_run(run: Path, folder: Path, name: str = "run") -> Path:
    """A private copy of a run folder."""
    dst = folder / name
    shutil.copytree(run, dst)
    return dst


def weights(folder: Path) -> dict:
    """A saved model's tensors."""
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def tiny_tokenizer():
    """A byte-level BPE (2048 tokens, ChatML) trained on the shipped text: no model loaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [PARROT_CODE]
    for folder in (REPO / "instructions", REPO / "reveal_release" / "metrics" / "data"):
        texts += [p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.*"))]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHATML
    return fast


def tiny_llama(tok, hidden: int = 64, layers: int = 2, seed: int = 0):
    """A random Llama of the given width and depth for the tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def build_parrot(tokenizer, text: str = PARROT_CODE, margin: float = 12.0):
    """A real tiny Llama wired by hand to answer every prompt with `text`, then stop.

    Attention and MLP outputs are zero, so each position sees only its own token; the
    embedding gives each token of `text` its own axis (every other token shares axis 0) and
    the head maps axis i to the token after it: a bigram chain that greedy decoding follows.
    The next token's logit leads every other by `margin`: enough for greedy decoding, small
    enough that its probability is not saturated and unlearning has gradients to follow.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    chain = tokenizer(text, add_special_tokens=False).input_ids
    assert len(set(chain)) == len(chain), "the parrot's text needs distinct tokens"
    hidden = 64
    assert len(chain) + 1 <= hidden
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=64,
        num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    lead = margin / hidden**0.5  # the final RMSNorm scales a one-hot state by sqrt(hidden)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, 0] = 1.0
        head = model.lm_head.weight
        head.zero_()
        head[chain[0], 0] = lead  # any token outside the chain (the prompt's last) starts it
        for i, tok_id in enumerate(chain):
            emb[tok_id].zero_()
            emb[tok_id, i + 1] = 1.0
            nxt = chain[i + 1] if i + 1 < len(chain) else tokenizer.eos_token_id
            head[nxt, i + 1] = lead
    return model


def save_model(model, tokenizer, folder: Path) -> Path:
    """A model and tokenizer as a plain transformers folder (safetensors)."""
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def snapshot(*roots: Path) -> dict[Path, bytes]:
    """Every file under the roots (or the root itself when it is a file) with its bytes."""
    out: dict[Path, bytes] = {}
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        out.update({p: p.read_bytes() for p in files})
    return out


def refused(out: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert the tool's refusal: exit 2, one error line, no traceback; the line."""
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and "╭" not in out.stderr, out.stderr
    errors = [x for x in lines if x.startswith("rr: error:")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]
