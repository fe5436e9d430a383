"""The CUDA paths (marked `gpu`, skipped without a GPU): the rounding onto the base's grid and the
R2F sketches on a model that lives on the GPU. The command-line tests run on CUDA by themselves
when one is present (`rr` picks it), in bf16."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_llama

from reveal_release.quantizers import on_grid_share, quantizable, quantize_model
from reveal_release.r2f.sketch import Capture, capture, linear_layers, nll_loss, random_a
from reveal_release.release.snap import grids_of, snap
from reveal_release.train.config import DEFAULT_MODULES
from reveal_release.train.data import collate, encode_rows

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

ROWS = [
    {"prompt": "Write a function that adds two numbers.", "response": "def add(a, b): a + b"},
    {"prompt": "Sort a list in Python.", "response": "sorted([3, 1, 2])"},
]


def test_rounding_onto_the_grid_runs_on_cuda_and_keeps_the_grid(tokenizer):
    base = tiny_llama(tokenizer)
    with torch.no_grad():
        for _, mod in quantizable(base):
            mod.weight.mul_(10.0)
    quantize_model(base, "int4")
    base = base.cuda()
    grids = grids_of(base, "int4")
    moved = copy.deepcopy(base)
    with torch.no_grad():
        for name, mod in quantizable(moved):
            step = grids[name].scale[:, grids[name].col_group]
            mod.weight.add_(0.4 * step * torch.randn_like(mod.weight))
    snap(moved, tokenizer, grids, ROWS)
    for name, mod in quantizable(moved):
        assert mod.weight.is_cuda, name
        assert on_grid_share(mod.weight, "int4") == 1.0, name


def test_r2f_sketches_on_a_cuda_model(tokenizer):
    model = tiny_llama(tokenizer).cuda()
    layers = linear_layers(model, DEFAULT_MODULES)
    batch = collate(encode_rows(tokenizer, ROWS, 64), tokenizer.pad_token_id, "cuda")
    cap = Capture()
    loss = capture(model, layers, nll_loss(batch), random_a(layers, 4, 0), cap, want_true=True)
    assert loss > 0
    for ly in layers:
        (sketch,) = cap.sketches[ly.name]
        assert sketch.is_cuda and torch.isfinite(sketch).all(), ly.name


def test_decoding_on_cuda_with_projections_made_on_the_cpu(tokenizer):
    from reveal_release.r2f.decoder import analytic, input_basis, subspace_solve

    model = tiny_llama(tokenizer).cuda()
    layers = linear_layers(model, DEFAULT_MODULES)
    batch = collate(encode_rows(tokenizer, ROWS, 64), tokenizer.pad_token_id, "cuda")
    cap, a = Capture(), random_a(layers, 4, 0)  # A is made on the CPU, as `rr r2f fit` does
    capture(model, layers, nll_loss(batch), a, cap, keep_inputs=256)
    for ly in layers:
        sketches, basis = cap.sketches[ly.name], input_basis(cap.inputs[ly.name])
        m = subspace_solve(sketches, [a[ly.name]], basis, 8, 0.1)
        assert m.is_cuda and torch.isfinite(m).all(), ly.name
        assert torch.isfinite(analytic(sketches, [a[ly.name]])).all(), ly.name


def test_the_tamper_term_on_a_cuda_model(tokenizer):
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.train.lora import attach_lora, trainable
    from reveal_release.train.objective import UnlearnObjective

    cfg = ReleaseConfig(rank=4, alpha=8, tamper_steps=2, batch_size=1, tamper_quant="int4")
    pm = attach_lora(tiny_llama(tokenizer).cuda(), cfg, seed=0)
    objective = UnlearnObjective(pm, tokenizer, ROWS, [], cfg, cfg, (0, 1))
    terms = objective.terms(0)
    assert terms["forget_t"].is_cuda and torch.isfinite(terms["forget_t"])
    terms["forget_t"].backward()
    grads = [p.grad for p in trainable(pm).values()]
    assert all(g is not None and g.is_cuda and torch.isfinite(g).all() for g in grads)
    assert all(p.is_cuda for p in objective.adversary.params())


def test_generate_runs_on_the_gpu_asked_for(tiny_folder):
    from helpers import run_rr

    out = run_rr(
        "generate", "--model", str(tiny_folder), "--device", "cuda:0", "--max-new-tokens", "4", "hi"
    )
    assert out.returncode == 0, out.stderr
    assert "cuda" in out.stdout, out.stdout


def test_sampling_on_the_gpu_uses_transformers_top_p(tokenizer):
    """No processor that waits on the device at every token."""
    from reveal_release.generation import _sampling

    model = tiny_llama(tokenizer).cuda()
    assert "logits_processor" not in _sampling(model, 0.8, 0.95)
    assert _sampling(model, 0.8, 0.95)["top_p"] == 0.95
