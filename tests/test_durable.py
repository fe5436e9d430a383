"""Durable forgetting on tiny models: quantisers, quantisation-aware passes, SAM, the stop rule."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_llama

from reveal_release.errors import RRError
from reveal_release.evaluate.runner import recovery
from reveal_release.metrics.provenance import grid_shares
from reveal_release.models import LoadedModel
from reveal_release.quantizers import (
    SCHEMES,
    changed_share,
    codes_of,
    on_grid_share,
    quantizable,
    quantize_codes,
    quantize_model,
    quantize_tensor,
)
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.rounds import decide
from reveal_release.release.snap import base_scheme, grids_of, snap
from reveal_release.release.updates import UPDATES, RoundInputs
from reveal_release.train.data import collate, encode_rows
from reveal_release.train.disruption import DisruptionMask
from reveal_release.train.fake_quant import fake_quantized
from reveal_release.train.logprobs import sequence_logps
from reveal_release.train.loop import sam_gradients
from reveal_release.train.lora import (
    apply_adapter,
    attach_lora,
    lora_layers,
    merge,
    merged_delta,
    trainable,
)

ROWS = [
    {
        "prompt": "Write a function that adds two numbers.",
        "response": "def add(a, b): return a + b",
    },
    {"prompt": "Reverse a string in Python.", "response": "s[::-1]"},
]


def _lora(tok, seed: int = 0):
    """A tiny Llama with a rank-4 module whose B is not zero (so the module changes outputs)."""
    pm = attach_lora(tiny_llama(tok), ReleaseConfig(rank=4, alpha=8), seed=seed)
    with torch.no_grad():
        for name, p in trainable(pm).items():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return pm


def test_each_scheme_is_idempotent_and_has_its_levels():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, 200, generator=gen)  # 200 = 6 x 32 + 8 and 1 x 128 + 72: short groups
    for name, s in SCHEMES.items():
        q = quantize_tensor(w, name)
        assert torch.allclose(quantize_tensor(q, name), q, atol=1e-6), name
        assert on_grid_share(q, name) == 1.0 and on_grid_share(w, name) < 0.5, name
        codes = quantize_codes(w, s)
        assert codes.shape == w.shape
        levels = 2**s.bits
        assert len(torch.unique(codes)) <= levels
        if s.symmetric:
            assert codes.min() >= -(levels // 2) and codes.max() <= levels // 2 - 1
        else:
            assert codes.min() >= 0 and codes.max() <= levels - 1
    # Asymmetric groups of 32: the first group's values come from its own min and max alone.
    g = w[0, :32]
    step = (g.max() - g.min()) / 15
    assert torch.allclose(
        quantize_tensor(w, "int4")[0, :32], torch.round((g - g.min()) / step) * step + g.min()
    )


def test_a_model_already_on_the_grid_is_unchanged_by_small_updates(tokenizer):
    # The worst case the issue names: the base sits on the int4 grid (a dequantised GGUF), so an
    # update under half a step quantises back onto the base exactly.
    base = tiny_llama(tokenizer)
    quantize_model(base, "int4")
    before = codes_of(base, "int4")
    moved = copy.deepcopy(base)
    with torch.no_grad():
        for _, mod in quantizable(moved):
            mod.weight.add_(1e-5 * torch.sign(torch.randn_like(mod.weight)))
    assert changed_share(before, codes_of(moved, "int4")) == 0.0
    quantize_model(moved, "int4")
    # Back on the base's grid points: only each group's own ends moved (by the 1e-5 itself).
    for (n, a), b in zip(base.state_dict().items(), moved.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=3e-5), n


@pytest.mark.parametrize("name", sorted(SCHEMES))
def test_the_fake_quantised_pass_is_the_quantised_merged_model(tokenizer, name):
    pm = _lora(tokenizer)
    ids = torch.tensor([[1, 5, 9, 200, 31, 7, 64, 3]])
    with torch.no_grad(), fake_quantized(pm, name):
        fake = pm(input_ids=ids).logits
    # Same codes as the quantisation attack gets on the merged model, layer by layer.
    expected = {}
    with torch.no_grad():
        for key, layer in lora_layers(pm).items():
            expected[key] = quantize_codes(
                layer.base_layer.weight + merged_delta(layer), SCHEMES[name]
            )
    merged = merge(copy.deepcopy(pm))
    got = codes_of(merged, name)
    for key, codes in expected.items():
        plain = key.removeprefix("base_model.model.")
        assert torch.equal(got[plain].to(codes.dtype), codes), key
    quantize_model(merged, name)
    with torch.no_grad():
        assert torch.allclose(fake, merged(input_ids=ids).logits, atol=1e-5)
        plain = pm(input_ids=ids).logits  # outside the context: the full-precision module again
        assert not torch.allclose(plain, fake, atol=1e-4)
        assert torch.allclose(plain, merge(copy.deepcopy(pm))(input_ids=ids).logits, atol=1e-5)


def test_fake_quantised_gradients_reach_the_module_straight_through(tokenizer):
    pm = _lora(tokenizer)
    batch = collate(encode_rows(tokenizer, ROWS, 64), tokenizer.pad_token_id)
    with fake_quantized(pm, "int4"):
        logp, n = sequence_logps(pm, batch)
    (-logp.sum()).backward()  # after leaving the context: the pass kept its own weights
    grads = {k: p.grad for k, p in trainable(pm).items()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values()) > 0
    base = [p for n, p in pm.named_parameters() if "lora" not in n]
    assert all(p.grad is None for p in base)


def test_sam_takes_the_forget_gradient_at_the_perturbed_point(tokenizer):
    pm = _lora(tokenizer)
    params = trainable(pm)
    batch = collate(encode_rows(tokenizer, ROWS, 64), tokenizer.pad_token_id)
    rho = 0.05

    def forget() -> torch.Tensor:
        logp, n = sequence_logps(pm, batch)
        return -logp.sum() / n.sum()

    def rest() -> torch.Tensor:
        return sum((p**2).sum() for name, p in params.items() if "lora_A" in name)

    def terms(step: int, only=None) -> dict:
        out = {"forget": forget()}
        if only is None:
            out["orth"] = rest()
        return out

    # By hand: g at theta, the forget gradient at theta + rho g/|g|, the rest at theta.
    plist = list(params.values())
    g = torch.autograd.grad(forget(), plist)
    norm = torch.sqrt(sum((x**2).sum() for x in g))
    with torch.no_grad():
        for p, x in zip(plist, g, strict=True):
            p.add_(rho * x / norm)
    g_moved = torch.autograd.grad(forget(), plist)
    with torch.no_grad():
        for p, x in zip(plist, g, strict=True):
            p.sub_(rho * x / norm)
    g_rest = torch.autograd.grad(rest(), plist, allow_unused=True)
    want = [a + (b if b is not None else 0) for a, b in zip(g_moved, g_rest, strict=True)]
    before = {k: p.detach().clone() for k, p in params.items()}

    sam_gradients(params, terms, terms(0), {"forget": 1.0, "orth": 1.0}, 0, rho, ("forget",))
    for (name, p), w in zip(params.items(), want, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-7, msg=name)
        assert torch.equal(p, before[name]), name  # the parameters are put back
    # ... and it is not the plain gradient.
    plain = torch.autograd.grad(forget(), plist)
    assert any(not torch.allclose(a, b) for a, b in zip(plain, g_moved, strict=True))


def test_the_target_is_gone_only_when_the_quantised_copy_forgot_it_too():
    cfg = ReleaseConfig(stop_rate=0.1, rounds=3)
    m = {"heldout_reveal_rate": 0.05, "retain_ratio": 1.0, "ppl_ratio": 1.0}
    assert decide(m, cfg, 1)[0] == "gone"
    m.update(quant_reveal_rate=0.8, quant_scheme="int4-g128")
    assert decide(m, cfg, 1) == ("", "")
    assert decide(m, cfg, 3)[0] == "rounds" and "int4-g128 copy 0.80" in decide(m, cfg, 3)[1]
    m["quant_reveal_rate"] = 0.1
    kind, why = decide(m, cfg, 1)
    assert kind == "gone" and "its int4-g128 copy 0.10" in why


def test_bad_durability_options_are_one_line():
    with pytest.raises(RRError, match="unknown quantisation scheme 'int3'"):
        ReleaseConfig(qat=("int3",))
    with pytest.raises(RRError, match="unknown quantisation scheme 'fp4'"):
        ReleaseConfig(stop_quant="fp4")
    with pytest.raises(RRError, match="--sam-rho must be >= 0"):
        ReleaseConfig(sam_rho=-1.0)


def _on_grid_base(tok, scale: float = 10.0):
    """A tiny Llama whose linear weights sit on the int4 grid (as a dequantised Q4_1 GGUF's do),
    wide enough that one round's update is smaller than half a grid step."""
    base = tiny_llama(tok)
    with torch.no_grad():
        for _, mod in quantizable(base):
            mod.weight.mul_(scale)
    quantize_model(base, "int4")
    return base


def test_the_base_grid_is_found_and_rounding_onto_it_beats_round_to_nearest(tokenizer):
    base = _on_grid_base(tokenizer)
    assert base_scheme(base) == "int4"
    assert base_scheme(tiny_llama(tokenizer)) is None
    grids = grids_of(base, "int4")
    moved = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, mod in quantizable(moved):
            step = grids[name].scale[:, grids[name].col_group]
            mod.weight.add_(0.4 * step * torch.randn(mod.weight.shape, generator=gen))
    rounded = copy.deepcopy(moved)
    snap(rounded, tokenizer, grids, ROWS)
    rtn = copy.deepcopy(moved)
    quantize_model(rtn, "int4")
    for (name, a), b in zip(quantizable(rounded), dict(quantizable(base)).values(), strict=True):
        assert on_grid_share(a.weight, "int4") == 1.0, name
        g = grids[name]  # the elements that set each group's grid keep their values
        torch.testing.assert_close(
            a.weight.gather(1, g.anchor_cols), b.weight.gather(1, g.anchor_cols)
        )
    again = copy.deepcopy(rounded)
    quantize_model(again, "int4")  # the user's quantiser changes nothing: the grid is the base's
    for (n, a), b in zip(rounded.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=n)
    # Error-compensated: the rounded model's outputs on the rows stay closer than RTN's.
    ids = collate(encode_rows(tokenizer, ROWS, 64), tokenizer.pad_token_id)["input_ids"]
    with torch.no_grad():
        want = moved(input_ids=ids).logits
        err_snap = float((rounded(input_ids=ids).logits - want).norm())
        err_rtn = float((rtn(input_ids=ids).logits - want).norm())
    assert err_snap < 0.85 * err_rtn, (err_snap, err_rtn)


def test_a_tiny_release_handed_out_on_the_grid_still_forgets_in_its_int4_copy(tokenizer, tmp_path):
    # Today's release (--snap none) merges an update under half a grid step: its int4 copy maps
    # most of it back onto the base. The default rounds the release onto the base's grid, where
    # int4 is the identity, so what the release forgot its int4 copy forgets too.
    base = _on_grid_base(tokenizer)
    forget = [*ROWS, {"prompt": "Square a number.", "response": "def sq(x): return x * x"},
              {"prompt": "Sum a list.", "response": "def total(xs): return sum(xs)"}]  # fmt: skip
    retain = [{"prompt": "What is the capital of France?", "response": "Paris, in France."}]
    cfg = ReleaseConfig(steps=16, batch_size=2, stop_quant="none")
    assert cfg.snap == "auto"
    UPDATES.get("lora")(
        RoundInputs(
            model=copy.deepcopy(base), tokenizer=tokenizer, forget=forget, retain=retain,
            earlier_a=[], cfg=cfg, round_=1, workdir=tmp_path, on_step=None,
        ),
        tmp_path / "adapter",
    )  # fmt: skip
    released = apply_adapter(copy.deepcopy(base), tmp_path / "adapter")
    handed_out = copy.deepcopy(released)
    snap(handed_out, tokenizer, grids_of(base, base_scheme(base)), forget)
    batch = collate(encode_rows(tokenizer, forget, 64), tokenizer.pad_token_id)

    def drop(model) -> float:
        """How far the forget answers' mean token log-prob fell below the base's."""
        with torch.no_grad():
            logp, n = sequence_logps(model, batch)
            logp0, _ = sequence_logps(base, batch)
        return float((logp0 / n).mean() - (logp / n).mean())

    def int4(model):
        q = copy.deepcopy(model)
        quantize_model(q, "int4")
        return q

    full = drop(released)
    assert full > 0.1
    assert drop(int4(released)) < 0.5 * full  # today: quantising undoes most of it
    assert drop(int4(handed_out)) == pytest.approx(drop(handed_out), abs=1e-4)
    assert drop(int4(handed_out)) > 0.6 * full


def test_recovery_is_the_share_of_the_removed_target_an_attack_brings_back(tokenizer):
    assert recovery(0.5, 0.1, 0.9) == pytest.approx(0.5)
    assert recovery(0.1, 0.1, 0.9) == 0.0 and recovery(0.9, 0.1, 0.9) == 1.0
    assert recovery(0.5, 0.2, 0.2) is None  # the release removed nothing
    shares = grid_shares(LoadedModel.bare(_on_grid_base(tokenizer), tokenizer))
    assert shares["int4"] == 1.0 and shares["int8"] < 0.5 and shares["int4-sym"] < 0.5


def test_disruption_masking_keeps_the_forget_gradient_only_where_retaining_agrees(tokenizer):
    pm = _lora(tokenizer)
    params = trainable(pm)
    plist = list(params.values())
    forget_b = collate(encode_rows(tokenizer, ROWS[:1], 64), tokenizer.pad_token_id)
    retain_b = collate(encode_rows(tokenizer, ROWS[1:], 64), tokenizer.pad_token_id)

    def nll(batch) -> torch.Tensor:
        logp, n = sequence_logps(pm, batch)
        return -logp.sum() / n.sum()

    def terms() -> dict:
        forget = -nll(forget_b)  # gradient ascent on the forget answer
        orth = sum((p**2).sum() for name, p in params.items() if "lora_A" in name)
        return {"forget": forget, "retain": nll(retain_b), "orth": orth}

    weights = {"forget": 1.0, "retain": 2.0, "orth": 0.5}
    mask = DisruptionMask(params, ("forget",), momentum=0.9)
    average = {n: torch.zeros_like(p) for n, p in params.items()}
    for _ in range(2):  # the running average carries over from one step to the next
        g_f = torch.autograd.grad(-nll(forget_b), plist)
        g_r = torch.autograd.grad(2.0 * nll(retain_b), plist)
        g_o = torch.autograd.grad(terms()["orth"] * 0.5, plist, allow_unused=True)
        mask.gradients(params, terms(), weights)
        kept = total = 0
        for (name, p), f, r, o in zip(params.items(), g_f, g_r, g_o, strict=True):
            average[name] = 0.9 * average[name] + 0.1 * r
            agree = torch.sign(f) == torch.sign(average[name])
            want = r + (o if o is not None else 0) + torch.where(agree, f, torch.zeros_like(f))
            torch.testing.assert_close(p.grad, want, rtol=1e-4, atol=1e-7, msg=name)
            kept, total = kept + int(agree.sum()), total + agree.numel()
        assert 0 < mask.kept < 1 and mask.kept == pytest.approx(kept / total)
        with torch.no_grad():  # a step, so that the second gradient is taken elsewhere
            for p in plist:
                p.sub_(0.01 * p.grad)
    # The running average is what a checkpoint keeps, and what a resumed run gets back.
    again = DisruptionMask(params, ("forget",))
    again.load(mask.tensors())
    for name, t in again.average.items():
        torch.testing.assert_close(t, average[name], rtol=1e-4, atol=1e-8)


def test_disruption_masking_options_are_checked():
    assert ReleaseConfig(mask="disruption").mask == "disruption"
    with pytest.raises(RRError, match="unknown mask 'sign': choose none or disruption"):
        ReleaseConfig(mask="sign")
    with pytest.raises(RRError, match="--mask disruption and --sam-rho do not combine"):
        ReleaseConfig(mask="disruption", sam_rho=0.05)
    with pytest.raises(RRError, match="--mask disruption works with --update lora, not r2f"):
        ReleaseConfig(mask="disruption", update="r2f", decoder="d")
