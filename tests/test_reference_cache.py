"""The retain loss's reference, cached per example: the same values as computing it in each
step, one forward per example, and off when the set would not fit in the memory limit."""

from __future__ import annotations

import copy

import pytest
import torch

from reveal_release.release.config import ReleaseConfig
from reveal_release.train.data import collate, encode_rows
from reveal_release.train.lora import attach_lora
from reveal_release.train.losses import RETAIN_LOSSES
from reveal_release.train.reference_cache import ReferenceCache, reference_bytes

RETAIN = [
    {"prompt": "What colour is the sky?", "response": "The sky is blue on a clear day."},
    {"prompt": "Name a fruit.", "response": "An apple is a fruit, and so is a pear."},
    {"prompt": "Say hi.", "response": "Hi!"},
]


class Counting:
    """Counts the forward passes of a model."""

    def __init__(self, model):
        self.calls = 0
        model.register_forward_pre_hook(self.seen)

    def seen(self, module, args):
        self.calls += 1


@pytest.fixture
def peft_kl(tiny_model):
    pm = attach_lora(copy.deepcopy(tiny_model.model), ReleaseConfig(rank=4, alpha=8), seed=0)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # an adapter that changes the model, as mid-round
    examples = encode_rows(tiny_model.tokenizer, RETAIN, 64)
    return pm, examples, tiny_model.tokenizer.pad_token_id, RETAIN_LOSSES.get("kl")()


def test_cached_reference_equals_the_step_reference(peft_kl):
    pm, examples, pad, loss = peft_kl
    cache = ReferenceCache(loss, pm, examples, pad)
    assert cache.on
    for idx in ([0, 2], [2, 1], [1, 1], [0, 1, 2]):  # repeats, new ones and a new order
        batch = collate([examples[i] for i in idx], pad)
        want = loss.reference(pm, batch)
        got = cache.get(idx, batch)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5)
        # The loss the step takes with it is the loss it took before.
        cfg = ReleaseConfig()
        assert torch.allclose(loss(pm, batch, cfg, got), loss(pm, batch, cfg, want), atol=1e-6)


def test_each_example_is_computed_once(peft_kl):
    pm, examples, pad, loss = peft_kl
    cache = ReferenceCache(loss, pm, examples, pad)
    counter = Counting(pm.get_base_model())
    for idx in ([0, 2], [2, 0], [0, 2]):
        cache.get(idx, collate([examples[i] for i in idx], pad))
    assert counter.calls == 1  # only the first batch needed a forward
    cache.get([1, 2], collate([examples[i] for i in (1, 2)], pad))
    assert counter.calls == 2 and set(cache.parts) == {0, 1, 2}


def test_past_the_limit_each_step_computes_its_own(peft_kl):
    pm, examples, pad, loss = peft_kl
    vocab = pm.get_output_embeddings().weight.shape[0]
    need = reference_bytes(examples, vocab)
    assert need == sum(len(loss.rows(loss.reference(pm, collate([e], pad)), collate([e], pad))[0])
                       for e in examples) * vocab * 4  # fmt: skip
    cache = ReferenceCache(loss, pm, examples, pad, limit=need - 1)
    assert not cache.on
    counter = Counting(pm.get_base_model())
    for _ in range(2):
        cache.get([0, 1], collate(examples[:2], pad))
    assert counter.calls == 2 and not cache.parts
    # A loss without a reference is never cached.
    assert not ReferenceCache(RETAIN_LOSSES.get("nll")(), pm, examples, pad).on
