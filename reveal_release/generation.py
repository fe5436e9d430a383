"""Batched chat generation with HF transformers: left padding, KV cache, length buckets."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reveal_release.decoding import grouped_attention, nucleus_processor
from reveal_release.errors import RRError
from reveal_release.models import LoadedModel


@dataclass
class Generation:
    """One prompt and the model's answer."""

    prompt: str
    text: str
    new_tokens: int


@dataclass
class GenerationStats:
    """Throughput of one generate call, counting only tokens up to each answer's end."""

    prompts: int
    new_tokens: int
    seconds: float

    @property
    def tokens_per_s(self) -> float:
        """Useful generated tokens per second of wall time."""
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def chat_text(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The model's chat-formatted input for one user prompt, ready for generation."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _useful_length(ids: list[int], stops: set[int], pad_id: int | None) -> int:
    """Tokens up to and including the first end-of-turn token (the rest is padding)."""
    for i, t in enumerate(ids):
        if t in stops:
            return i + 1
    while ids and pad_id is not None and ids[-1] == pad_id:
        ids = ids[:-1]
    return len(ids)


def check_prompt_lengths(
    loaded: LoadedModel, prompts: Sequence[str], lengths: Sequence[int], max_new_tokens: int
) -> None:
    """A one-line error, before any generation, for a prompt that leaves no room for the
    answer in the model's context (its max_position_embeddings)."""
    context = getattr(loaded.model.config, "max_position_embeddings", None)
    if not context:
        return
    room = context - max_new_tokens
    if room <= 0:
        raise RRError(
            f"{max_new_tokens} new tokens do not fit this model's context ({context} tokens): "
            "ask for fewer new tokens"
        )
    for prompt, n in zip(prompts, lengths, strict=True):
        if n > room:
            head = " ".join(prompt.split())[:40]
            raise RRError(
                f"the prompt '{head}...' is {n} tokens in the chat template; with "
                f"{max_new_tokens} new tokens this model's context ({context}) leaves room "
                f"for {room}: shorten the prompt or ask for fewer new tokens"
            )


def _sampling(model: Any, temperature: float, top_p: float) -> dict[str, Any]:
    """generate()'s sampling options: greedy at temperature 0; top-p through the processor
    that gives transformers' scores without sorting the vocabulary, unless the model's own
    generation config adds top-k (which transformers applies before top-p). On a GPU,
    transformers' own top-p: sorting there is cheap, and the processor's widening loop would
    wait on the device at every token."""
    if temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    config_top_k = getattr(getattr(model, "generation_config", None), "top_k", None)
    on_cpu = next(model.parameters()).device.type == "cpu"
    if top_p >= 1.0 or config_top_k or not on_cpu:
        return {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": None}
    return {
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 1.0,
        "top_k": None,
        "logits_processor": nucleus_processor(temperature, top_p),
    }


def generate(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 128,
    batch_size: int = 8,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    system: str | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[Generation], GenerationStats]:
    """Answer prompts in length-sorted batches; same seed and inputs give the same answers."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    texts = [chat_text(tok, p, system) for p in prompts]
    lengths = [len(tok(t, add_special_tokens=False).input_ids) for t in texts]
    check_prompt_lengths(loaded, prompts, lengths, max_new_tokens)
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    results: list[Generation | None] = [None] * len(texts)
    stops = set(loaded.stop_token_ids)
    total_new, start = 0, time.perf_counter()
    for b, lo in enumerate(range(0, len(order), batch_size)):
        idx = order[lo : lo + batch_size]
        enc = tok(
            [texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(loaded.device)
        torch.manual_seed(seed + b)
        with torch.inference_mode(), grouped_attention(model):
            out = model.generate(
                **enc,
                **_sampling(model, temperature, top_p),
                max_new_tokens=max_new_tokens,
                eos_token_id=list(stops),
                pad_token_id=tok.pad_token_id,
                use_cache=True,
            )
        new = out[:, enc.input_ids.shape[1] :].tolist()
        for i, ids in zip(idx, new, strict=True):
            n = _useful_length(ids, stops, tok.pad_token_id)
            total_new += n
            text = tok.decode(ids[:n], skip_special_tokens=True).strip()
            results[i] = Generation(prompts[i], text, n)
        if on_batch:
            on_batch(len(idx))
    stats = GenerationStats(len(texts), total_new, time.perf_counter() - start)
    return [r for r in results if r is not None], stats
