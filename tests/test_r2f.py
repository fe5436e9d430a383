"""R2F: gradient identities, analytic and fitted decoders, save/load, transfer, bad input."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import copy_run, run_rr, tiny_llama

from reveal_release.errors import RRError
from reveal_release.models import LoadedModel
from reveal_release.r2f.decoder import (
    analytic,
    cosine,
    input_basis,
    load_decoder,
    subspace_solve,
)
from reveal_release.r2f.fit import check_decoder, fit_decoder, make_examples
from reveal_release.r2f.fit_config import check_range
from reveal_release.r2f.sketch import Capture, capture, linear_layers, nll_loss, random_a
from reveal_release.train.data import collate, encode

KINDS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _llama(tok, hidden: int, layers: int, seed: int = 0):
    return tiny_llama(tok, hidden, layers, seed)


def _batch(tok):
    pairs = [("Write a loop.", "for i in range(3): print(i)"), ("Name a colour.", "Blue.")]
    return collate([encode(tok, p, r, 64) for p, r in pairs], tok.pad_token_id)


def test_lora_gradient_identities_against_autograd(tiny_model):
    from peft import LoraConfig, get_peft_model

    tok = tiny_model.tokenizer
    model = _llama(tok, 64, 2)
    peft = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"])
    )
    s = 8 / 4
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)  # B != 0, so dL/dA carries G too
        if name.endswith("q_proj.base_layer.weight") or name.endswith("up_proj.base_layer.weight"):
            p.requires_grad_(True)
    b = _batch(tok)
    out = peft(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
    out.loss.backward()
    params = dict(peft.named_parameters())
    checked = 0
    for name, p in params.items():
        if not name.endswith(".base_layer.weight"):
            continue
        stem = name.removesuffix(".base_layer.weight")
        g = p.grad
        a, bm = params[f"{stem}.lora_A.default.weight"], params[f"{stem}.lora_B.default.weight"]
        torch.testing.assert_close(bm.grad, s * g @ a.detach().T, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(a.grad, s * bm.detach().T @ g, rtol=1e-4, atol=1e-6)
        checked += 1
    assert checked == 4  # 2 kinds x 2 layers


def test_sketches_without_weight_gradients_match_autograd(tiny_model):
    tok = tiny_model.tokenizer
    model = _llama(tok, 64, 2)
    layers = linear_layers(model, KINDS)
    assert len(layers) == 14 and layers[-1].depth == 1.0
    a = random_a(layers, 4, seed=1)
    cap = Capture()
    b = _batch(tok)
    capture(model, layers, nll_loss(b), a, cap, want_true=True)
    assert all(p.grad is None for p in model.parameters())  # no weight gradient was computed
    out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"])
    out.loss.backward()
    mods = dict(model.named_modules())
    for ly in layers:
        g = mods[ly.name].weight.grad
        torch.testing.assert_close(cap.true[ly.name], g, rtol=1e-3, atol=1e-6)
        torch.testing.assert_close(cap.sketches[ly.name][0], g @ a[ly.name].T, rtol=1e-3, atol=1e-6)


def test_views_in_one_pass_give_each_view_its_own_sketch(tiny_model):
    # R2F's cheaper views: the forget views batched into one pass and the retain rows run once
    # for all views give the sketches of one pass per view (NPO_v - a * retain), in one pass or
    # in several.
    from types import SimpleNamespace

    from reveal_release.r2f.sketch import capture_views
    from reveal_release.release.updates.r2f import round_loss
    from reveal_release.train.logprobs import sequence_logps_from_logits
    from reveal_release.train.losses.npo import npo_loss

    tok = tiny_model.tokenizer
    model = _llama(tok, 64, 2)
    layers = linear_layers(model, KINDS)
    cfg = SimpleNamespace(beta=0.1, retain_weight=0.7)
    prompts = [
        ["Write a loop.", "Sort a list."],
        ["Code a loop, please.", "Sort these."],
        ["A loop in Python?", "How do I sort a long list of numbers in place?"],
    ]
    answers = ["for i in range(3): print(i)", "xs.sort()"]
    ref = torch.tensor([-20.0, -9.0])
    retain = collate(
        [
            encode(tok, "Name a colour.", "Blue.", 64),
            encode(tok, "Capital of France?", "Paris.", 64),
        ],
        tok.pad_token_id,
    )
    a_views = [random_a(layers, 4, seed=10 + v) for v in range(3)]

    def one_view(batch):
        def loss_fn(forward):
            logp, _ = sequence_logps_from_logits(
                forward(batch["input_ids"], batch["attention_mask"]), batch["labels"]
            )
            rl, rn = sequence_logps_from_logits(
                forward(retain["input_ids"], retain["attention_mask"]), retain["labels"]
            )
            return npo_loss(logp, ref, cfg.beta) - cfg.retain_weight * rl.sum() / rn.sum()

        return loss_fn

    expected = Capture()
    for v in range(3):
        b = collate(
            [encode(tok, p, r, 64) for p, r in zip(prompts[v], answers, strict=True)],
            tok.pad_token_id,
        )
        capture(model, layers, one_view(b), a_views[v], expected)

    def batched(group, with_retain):
        pairs = [(prompts[v][i], answers[i]) for v in group for i in range(2)]
        b = collate([encode(tok, p, r, 64) for p, r in pairs], tok.pad_token_id)
        views = [v for v in group for _ in range(2)]
        fn, _ = round_loss(cfg, b, views, ref.repeat(len(group)), retain if with_retain else None)
        return fn

    together, in_two = Capture(), Capture()
    capture_views(model, layers, batched([0, 1, 2], True), a_views, together)
    capture_views(model, layers, batched([0, 1], True), a_views, in_two)
    capture_views(model, layers, batched([2], False), a_views, in_two)
    for ly in layers:
        for v in range(3):
            want = expected.sketches[ly.name][v]
            assert want.abs().max() > 0
            for got in (together, in_two):
                torch.testing.assert_close(got.sketches[ly.name][v], want, rtol=1e-3, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())


def test_a_paired_loss_runs_its_chosen_answers_under_the_same_views(tiny_model):
    # --loss generic-dpo under --update r2f: each view's sketch is that of DPO on that view's
    # (rejected, chosen) pairs, the chosen answers in the same pass as the rejected ones.
    from types import SimpleNamespace

    from reveal_release.r2f.sketch import capture_views
    from reveal_release.release.updates.r2f import round_loss
    from reveal_release.train.logprobs import sequence_logps_from_logits
    from reveal_release.train.losses.base import FORGET_LOSSES
    from reveal_release.train.losses.generic_dpo import dpo_loss

    tok = tiny_model.tokenizer
    model = _llama(tok, 64, 2)
    layers = linear_layers(model, KINDS)
    cfg = SimpleNamespace(beta=0.3, retain_weight=0.0)
    prompts = [["Who wrote it?", "Name a painter."], ["Who was the author?", "A painter, please."]]
    rejected = ["Ann Smith wrote it.", "Pablo Picasso painted it."]
    chosen = ["someone wrote it.", "someone painted it."]
    ref = torch.tensor([-12.0, -15.0, -9.0, -11.0])  # the rejected rows', then the chosen rows'
    a_views = [random_a(layers, 4, seed=30 + v) for v in range(2)]

    def encoded(pairs):
        return collate([encode(tok, p, r, 64) for p, r in pairs], tok.pad_token_id)

    expected, values = Capture(), []
    for v in range(2):
        b = encoded(list(zip(prompts[v] * 2, rejected + chosen, strict=True)))

        def loss_fn(forward, b=b):
            logp, _ = sequence_logps_from_logits(
                forward(b["input_ids"], b["attention_mask"]), b["labels"]
            )
            out = dpo_loss(logp[:2], logp[2:], ref[:2], ref[2:], cfg.beta)
            values.append(float(out.detach()))
            return out

        capture(model, layers, loss_fn, a_views[v], expected)
    pairs = [(prompts[v][i], ans[i]) for ans in (rejected, chosen) for v in (0, 1) for i in (0, 1)]
    views = [v for _ in range(2) for v in (0, 1) for _ in range(2)]
    at = torch.tensor([0, 1, 0, 1])
    ref_rows = torch.cat([ref[:2][at], ref[2:][at]])
    fn, report = round_loss(cfg, encoded(pairs), views, ref_rows, None, None,
                            FORGET_LOSSES.get("generic-dpo")(), paired=True)  # fmt: skip
    got = Capture()
    capture_views(model, layers, fn, a_views, got)
    assert report["forget"] == pytest.approx(sum(values) / 2, rel=1e-4)
    for ly in layers:
        for v in range(2):
            want = expected.sketches[ly.name][v]
            assert want.abs().max() > 0
            torch.testing.assert_close(got.sketches[ly.name][v], want, rtol=1e-3, atol=1e-6)


def test_an_r2f_round_trains_the_forget_loss_it_is_given(fitted, tiny_model, tmp_path):
    # --loss reaches R2F: generic-dpo on rows with target spans gives another module than NPO,
    # and rows without spans get the one-line error LoRA gives.
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.updates import UPDATES, RoundInputs
    from reveal_release.train.lora import delta_weights

    _, _, path = fitted
    model = _llama(tiny_model.tokenizer, 64, 2)
    rows = [
        {"prompt": "Who wrote it?", "response": "Ann Smith wrote it.", "focus": [[0, 9]]},
        {"prompt": "Name a painter.", "response": "Pablo Picasso.", "focus": [[0, 13]]},
    ]

    def module(loss, forget):
        cfg = ReleaseConfig(update="r2f", decoder=str(path), steps=1, batch_size=2, rank=4,
                            target_modules=KINDS, loss=loss, beta=0.3)  # fmt: skip
        UPDATES.get("r2f")(
            RoundInputs(model=model, tokenizer=tiny_model.tokenizer, forget=forget, retain=[],
                        earlier_a=[], cfg=cfg, round_=1, workdir=tmp_path, on_step=None),
            tmp_path / loss,
        )  # fmt: skip
        return delta_weights(tmp_path / loss)

    dpo, npo = module("generic-dpo", rows), module("npo", rows)
    assert set(dpo) == set(npo)
    assert all(float(d.norm()) > 0 for d in dpo.values())
    assert any(not torch.allclose(dpo[k], npo[k], atol=1e-6) for k in dpo)
    with pytest.raises(RRError, match="--loss generic-dpo needs a judge that marks the target"):
        module("generic-dpo", [{k: v for k, v in r.items() if k != "focus"} for r in rows])


def _tamper_round(path, tok, tmp_path, **options):
    """An R2F round's inputs on a fresh tiny Llama: three code answers, one retain answer."""
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.updates import RoundInputs

    rows = [{"prompt": "Write a function.", "response": "def f(x): return x + 1"},
            {"prompt": "Reverse a list.", "response": "def rev(xs): return xs[::-1]"},
            {"prompt": "Sort a list.", "response": "sorted(xs)"}]  # fmt: skip
    cfg = ReleaseConfig(update="r2f", decoder=str(path), batch_size=1, rank=4,
                        target_modules=KINDS, r2f_views="projections", **options)  # fmt: skip
    return RoundInputs(model=_llama(tok, 64, 2), tokenizer=tok, forget=rows, retain=rows[:1],
                       earlier_a=[], cfg=cfg, round_=1, workdir=tmp_path, on_step=None)  # fmt: skip


def test_the_r2f_tamper_term_is_the_forget_loss_where_the_attacker_relearned(
    fitted, tiny_model, tmp_path
):
    # --tamper-steps under R2F: the step's attacker trains on the step's own answer, and the
    # term is --tamper-weight x NPO on another answer with the attacker's delta on, the same
    # value as on a copy of the model with that delta merged into its weights.
    import copy

    from reveal_release.release.updates.r2f import _attacked_term, _batch, _prepare
    from reveal_release.train.logprobs import answer_nll, sequence_logps
    from reveal_release.train.losses.npo import npo_loss

    _, _, path = fitted
    tok = tiny_model.tokenizer
    inp = _tamper_round(path, tok, tmp_path, steps=1, tamper_steps=3, tamper_lr=1e-2,
                        tamper_weight=0.5, tamper_beta=0.2)  # fmt: skip
    r = _prepare(inp)
    own = _batch(tok, [(r.rows[0]["prompt"], r.rows[0]["response"])], 64, "cpu")
    with torch.no_grad():
        start = float(answer_nll(inp.model, own))
    term = _attacked_term(r, [0], 0)
    with torch.no_grad(), r.adversary.active():
        assert float(answer_nll(inp.model, own)) < start - 0.05  # it relearned its answer
    merged = copy.deepcopy(inp.model)
    mods = dict(merged.named_modules())
    with torch.no_grad():
        for ly, (a, b) in zip(r.layers, r.adversary.factors, strict=True):
            mods[ly.name].weight += r.adversary.scale * b @ a
    want = []
    for k in (1, 2):  # the other answer is one of these
        batch = _batch(tok, [(r.rows[k]["prompt"], r.rows[k]["response"])], 64, "cpu")
        with torch.no_grad():
            logp, _ = sequence_logps(merged, batch)
        want.append(0.5 * float(npo_loss(logp, r.ref[k : k + 1], 0.2)))

    def forward(ids, mask, views=None, keep=0):
        return inp.model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits

    with torch.no_grad():
        got = float(term(forward))
    assert min(abs(got - w) for w in want) < 1e-4 * max(want), (got, want)
    r.inp = replace_cfg(inp, tamper_every=2)
    assert _attacked_term(r, [0], 1) is None  # --tamper-every 2: no attack on the second step


def replace_cfg(inp, **options):
    """The round's inputs with config options changed."""
    import dataclasses

    return dataclasses.replace(inp, cfg=dataclasses.replace(inp.cfg, **options))


def test_an_r2f_round_with_the_tamper_term_trains_another_module_and_leaves_no_hook(
    fitted, tiny_model, tmp_path
):
    # The attacked term reaches the decoded steps (another module than the same round without
    # it, the term in the history), and the model answers as before once the round is over.
    from reveal_release.release.updates import UPDATES
    from reveal_release.train.lora import delta_weights

    _, _, path = fitted
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])
    modules = {}
    for steps in (0, 2):
        inp = _tamper_round(path, tiny_model.tokenizer, tmp_path, steps=2, tamper_steps=steps)
        with torch.no_grad():
            before = inp.model(input_ids=ids).logits
        result = UPDATES.get("r2f")(inp, tmp_path / f"t{steps}")
        with torch.no_grad():
            torch.testing.assert_close(inp.model(input_ids=ids).logits, before)
        modules[steps] = delta_weights(tmp_path / f"t{steps}")
        attacked = [h.get("forget_t") for h in result.history]
        assert all(t is None for t in attacked) if steps == 0 else all(t > 0 for t in attacked)
    assert any(not torch.allclose(modules[0][k], modules[2][k], atol=1e-6) for k in modules[0])


def test_the_retain_null_space_leaves_the_retain_answers_outputs_where_they_were(
    fitted, tiny_model, tmp_path
):
    # --r2f-null-space 1.0: every layer's change is orthogonal to the inputs the retain answer
    # feeds it, so with the round's module merged the retain answer's logits are the base's while
    # the forget answers' move; without it the retain logits move too.
    import copy

    from reveal_release.release.updates import UPDATES
    from reveal_release.release.updates.r2f import _batch
    from reveal_release.train.lora import delta_weights

    _, _, path = fitted
    tok = tiny_model.tokenizer
    moved = {}
    for share in (0.0, 1.0):
        inp = _tamper_round(path, tok, tmp_path, steps=2, r2f_null_space=share, r2f_step=5e-2)
        base = copy.deepcopy(inp.model)
        UPDATES.get("r2f")(inp, tmp_path / f"n{share}")
        mods = dict(inp.model.named_modules())
        with torch.no_grad():
            for name, d in delta_weights(tmp_path / f"n{share}").items():
                mods[name.removeprefix("base_model.model.")].weight += d
        for part, rows in (("retain", inp.retain), ("forget", inp.forget[1:])):
            b = _batch(tok, [(r["prompt"], r["response"]) for r in rows], 64, "cpu")
            with torch.no_grad():
                was = base(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                now = inp.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            moved[part, share] = float((now - was).abs().max())
    assert moved["retain", 1.0] < 1e-3 < 0.1 < moved["retain", 0.0], moved  # 2e-4 against 0.5
    assert moved["forget", 1.0] > 1e-3, moved


def test_null_space_bases_carry_the_share_asked_and_join_without_extra_directions():
    from reveal_release.r2f.null_space import joined, top_directions

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=gen) @ torch.randn(3, 16, generator=gen)  # rank 3 in 16
    x[:, 0] += 10 * torch.randn(40, generator=gen)  # one loud direction
    cov = (x.T @ x).double()
    assert top_directions(cov, 1.0).shape == (16, 4)  # rank 4: nothing past it
    loud = top_directions(cov, 0.5)
    assert loud.shape == (16, 1) and abs(float(loud[0, 0])) > 0.95
    q = top_directions(cov, 1.0).float()
    both = joined({"l": q[:, :2]}, {"l": q[:, 1:], "m": q})
    assert both["l"].shape == (16, 4) and both["m"] is q
    torch.testing.assert_close(both["l"].T @ both["l"], torch.eye(4), atol=1e-5, rtol=0)


def test_projection_views_sketch_one_gradient_in_one_pass(tiny_model):
    # --r2f-views projections: the forget rows shared by every view in one pass give view v the
    # sketch G A_v^T of the one batch's loss, as a pass per A would.
    from types import SimpleNamespace

    from reveal_release.r2f.sketch import capture_views
    from reveal_release.release.updates.r2f import round_loss
    from reveal_release.train.logprobs import sequence_logps_from_logits
    from reveal_release.train.losses.npo import npo_loss

    tok = tiny_model.tokenizer
    model = _llama(tok, 64, 2)
    layers = linear_layers(model, KINDS)
    cfg = SimpleNamespace(beta=0.1, retain_weight=0.0)
    batch, ref = _batch(tok), torch.tensor([-20.0, -9.0])
    a_views = [random_a(layers, 4, seed=50 + v) for v in range(3)]

    def loss_fn(forward):
        logp, _ = sequence_logps_from_logits(
            forward(batch["input_ids"], batch["attention_mask"]), batch["labels"]
        )
        return npo_loss(logp, ref, cfg.beta)

    expected, got = Capture(), Capture()
    for a in a_views:
        capture(model, layers, loss_fn, a, expected)
    fn, report = round_loss(cfg, batch, None, ref, None)
    capture_views(model, layers, fn, a_views, got)
    for ly in layers:
        for v in range(3):
            want = expected.sketches[ly.name][v]
            assert want.abs().max() > 0
            torch.testing.assert_close(got.sketches[ly.name][v], want, rtol=1e-3, atol=1e-6)
    assert not torch.allclose(got.sketches[layers[0].name][0], got.sketches[layers[0].name][1])


def test_an_r2f_round_with_projection_views_asks_for_no_paraphrases(
    fitted, tiny_model, tmp_path, monkeypatch
):
    # The views are the forget prompts themselves: the round writes its module without the
    # model rewording a prompt, and a view source it does not know is a one-line error.
    import reveal_release.r2f.paraphrase as para
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.updates import UPDATES, RoundInputs
    from reveal_release.train.lora import delta_weights

    _, _, path = fitted
    model = _llama(tiny_model.tokenizer, 64, 2)
    rows = [{"prompt": "Write a function.", "response": "def f(x): return x + 1"},
            {"prompt": "Reverse a list.", "response": "def rev(xs): return xs[::-1]"}]  # fmt: skip
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    monkeypatch.setattr(para, "paraphrases", lambda *a, **k: pytest.fail("paraphrased"))
    cfg = ReleaseConfig(update="r2f", decoder=str(path), steps=2, batch_size=2, rank=4,
                        target_modules=KINDS, r2f_views="projections")  # fmt: skip
    result = UPDATES.get("r2f")(
        RoundInputs(model=model, tokenizer=tiny_model.tokenizer, forget=rows, retain=rows[:1],
                    earlier_a=[], cfg=cfg, round_=1, workdir=tmp_path, on_step=None),
        tmp_path / "adapter",
    )  # fmt: skip
    assert result.steps == 2 and all(h["forget"] > 0 for h in result.history)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(float(d.norm()) > 0 for d in delta_weights(tmp_path / "adapter").values())
    with pytest.raises(RRError, match="unknown view source 'both': choose paraphrases or"):
        ReleaseConfig(r2f_views="both")


def test_an_r2f_round_ends_early_under_converge_as_a_lora_round_does(fitted, tiny_model, tmp_path):
    # --converge (and its patience) end an R2F round too: here any loss under 10x the first.
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.updates import UPDATES, RoundInputs

    _, _, path = fitted
    model = _llama(tiny_model.tokenizer, 64, 2)
    rows = [{"prompt": "Write a function.", "response": "def f(x): return x + 1"}]
    steps = {}
    for converge in (0.0, 10.0):
        cfg = ReleaseConfig(update="r2f", decoder=str(path), steps=4, batch_size=1, rank=4,
                            target_modules=KINDS, r2f_views="projections", converge=converge,
                            patience=1)  # fmt: skip
        steps[converge] = UPDATES.get("r2f")(
            RoundInputs(model=model, tokenizer=tiny_model.tokenizer, forget=rows, retain=[],
                        earlier_a=[], cfg=cfg, round_=1, workdir=tmp_path, on_step=None),
            tmp_path / f"adapter-{converge}",
        ).steps  # fmt: skip
    assert steps == {0.0: 4, 10.0: 2}


def test_the_retain_kl_term_holds_the_base_models_answer_distributions(tiny_model):
    # --retain-loss kl under --update r2f: a * KL(base || model) over the retain answers'
    # next-token distributions, the base's taken with the round's weights swapped out for one
    # pass (the moved weights put back); 0 at the base, the hand-computed KL once a layer moved.
    from types import SimpleNamespace

    import torch.nn.functional as F

    from reveal_release.release.updates.r2f import base_dists, round_loss
    from reveal_release.train.data import IGNORE

    tok = tiny_model.tokenizer
    model = _llama(tok, 64, 2)
    mods = dict(model.named_modules())
    layers = linear_layers(model, KINDS)
    original = {ly.name: mods[ly.name].weight.detach().clone() for ly in layers}
    retain, forget = _batch(tok), _batch(tok)
    cfg = SimpleNamespace(beta=0.1, retain_weight=0.5)

    def forward(ids, mask, views=None, keep=0):
        return model(input_ids=ids, attention_mask=mask).logits[:, -keep:]

    def retain_term():
        base = base_dists(model, mods, original, retain)
        fn, report = round_loss(cfg, forget, [0, 0], torch.zeros(2), retain, base)
        with torch.no_grad():
            fn(forward)
        return report["retain"]

    assert retain_term() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        moved = mods[layers[0].name].weight
        moved += 2.0 * torch.randn(moved.shape, generator=torch.Generator().manual_seed(0))
    after, kept, at = moved.detach().clone(), original[layers[0].name].clone(), moved.data_ptr()
    got = retain_term()
    torch.testing.assert_close(mods[layers[0].name].weight, after)  # put back, in place
    assert moved.data_ptr() == at and mods[layers[0].name].weight is moved
    torch.testing.assert_close(original[layers[0].name], kept)  # the original untouched
    mask = retain["labels"][:, 1:] != IGNORE
    with torch.no_grad():
        cur = F.log_softmax(model(**{k: retain[k] for k in ("input_ids", "attention_mask")})
                            .logits[:, :-1][mask], -1)  # fmt: skip
        moved.copy_(original[layers[0].name])
        base = F.log_softmax(model(**{k: retain[k] for k in ("input_ids", "attention_mask")})
                             .logits[:, :-1][mask], -1)  # fmt: skip
    want = 0.5 * float(F.kl_div(cur, base, log_target=True, reduction="batchmean"))
    assert got == pytest.approx(want, rel=1e-4) and got > 1e-5


def test_analytic_decoder_is_unbiased():
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(6, 20, generator=gen)
    r, d, n = 4, 20, 4000
    a_mats = [torch.randn(r, d, generator=gen) / d**0.5 for _ in range(n)]
    mean = analytic([g @ a.T for a in a_mats], a_mats)
    assert (mean - g).norm() / g.norm() < 0.1  # one view alone is far off; the mean is not
    one = analytic([g @ a_mats[0].T], a_mats[:1])
    assert cosine(one, g) < 0.9 < cosine(mean, g)


def test_subspace_decoder_is_exact_inside_the_input_span():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 6, generator=gen) @ torch.randn(6, 40, generator=gen)  # rank-6 inputs
    u = input_basis([x], k_max=6)
    g = torch.randn(10, 200, generator=gen) @ x  # rows in the span of the inputs
    a_mats = [torch.randn(4, 40, generator=gen) for _ in range(2)]  # 2 views x r 4 >= k 6
    m = subspace_solve([g @ a.T for a in a_mats], a_mats, u, 6, 1e-6)
    assert cosine(m @ u.T, g) > 0.999
    assert cosine(analytic([g @ a.T for a in a_mats], a_mats), g) < 0.9


def test_layers_that_read_one_input_share_its_rows_and_basis(tiny_model):
    # q, k and v read one tensor, gate and up another: the capture keeps one copy of those rows
    # and the decoding takes one basis for them, as wide as twice the largest k among them.
    from reveal_release.r2f.decoder import shared_bases

    tok = tiny_model.tokenizer
    model = _llama(tok, 64, 2)
    layers = linear_layers(model, KINDS)
    cap = Capture()
    capture(model, layers, nll_loss(_batch(tok)), random_a(layers, 4, seed=3), cap,
            keep_inputs=64)  # fmt: skip
    names = {ly.kind: ly.name for ly in layers if ".layers.1." in ly.name}
    assert cap.inputs[names["q_proj"]][0] is cap.inputs[names["v_proj"]][0]
    assert cap.inputs[names["gate_proj"]][0] is cap.inputs[names["up_proj"]][0]
    assert cap.inputs[names["o_proj"]][0] is not cap.inputs[names["q_proj"]][0]
    ks = {"q_proj": 4, "k_proj": 8, "v_proj": 4, "o_proj": 8, "gate_proj": 16, "up_proj": 4,
          "down_proj": 8}  # fmt: skip
    bases = shared_bases(layers, cap.inputs, lambda ly: ks[ly.kind])
    assert bases[names["q_proj"]] is bases[names["k_proj"]] is bases[names["v_proj"]]
    assert bases[names["q_proj"]].shape[1] == 16 and bases[names["gate_proj"]].shape[1] == 32
    assert bases[names["o_proj"]].shape[1] == 16 and bases[names["down_proj"]].shape[1] == 16
    # the narrower randomized basis spans the exact top-k input directions
    for ly in layers:
        x = torch.cat(cap.inputs[ly.name])
        exact = torch.linalg.svd(x, full_matrices=False).Vh[: ks[ly.kind]].T
        u = bases[ly.name][:, : ks[ly.kind]]
        overlap = float((exact.T @ u).norm() ** 2) / ks[ly.kind]
        assert overlap > 0.95, (ly.name, overlap)


def _loaded(tiny_model, model) -> LoadedModel:
    import dataclasses

    return dataclasses.replace(tiny_model, model=model, fingerprint="r2f-test")


@pytest.fixture(scope="module")
def fitted(tiny_model, tmp_path_factory):
    """A decoder fitted on a 2-layer, 64-wide tiny Llama, and its folder."""
    from reveal_release.r2f.command import FIT_POOLS, prompts_from

    proxy = _loaded(tiny_model, _llama(tiny_model.tokenizer, 64, 2))
    dec, fig = fit_decoder(proxy, prompts_from(FIT_POOLS, 12), KINDS, views=2, rank=4)
    path = tmp_path_factory.mktemp("dec") / "decoder"
    dec.save(path)
    return dec, fig, path


def test_fit_reports_held_out_cosines_per_layer_kind(fitted):
    dec, fig, _ = fitted
    assert set(fig["layers"]) == set(KINDS)
    for v in fig["layers"].values():
        assert -1 <= v["cosine_learned"] <= 1 and -1 <= v["cosine_analytic"] <= 1
    assert fig["cosine_learned"] > fig["cosine_analytic"]  # the fitted decoder beats the baseline
    assert dec.scores.shape[:2] == (7, 3)


def test_save_load_gives_the_same_outputs(fitted):
    dec, _, path = fitted
    again = load_decoder(path)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(50, 32, generator=gen)
    a_mats = [torch.randn(4, 32, generator=gen) for _ in range(2)]
    s = [torch.randn(8, 4, generator=gen) for _ in range(2)]
    u = input_basis([x])
    for kind in KINDS:
        assert dec.params(kind, 0.5) == again.params(kind, 0.5)
        torch.testing.assert_close(
            dec.decode(kind, 0.9, s, a_mats, u), again.decode(kind, 0.9, s, a_mats, u)
        )


def test_a_decoder_fitted_on_one_architecture_runs_on_another(fitted, tiny_model):
    from reveal_release.r2f.command import CHECK_POOLS, prompts_from

    dec, _, _ = fitted
    other = _loaded(tiny_model, _llama(tiny_model.tokenizer, 96, 3, seed=5))  # other widths, depth
    layers = linear_layers(other.model, KINDS)
    examples = make_examples(other, prompts_from(CHECK_POOLS, 4), 2, 4, seed=3)
    fig = check_decoder(dec, other, layers, examples, rank=4, seed=9)
    assert fig["layers"]["down_proj"]["n"] == 3 and -1 <= fig["cosine_learned"] <= 1


def test_bad_decoders_and_ranges(fitted, tmp_path):
    dec, _, path = fitted
    with pytest.raises(RRError, match="not a decoder folder"):
        load_decoder(tmp_path / "nothing")
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "decoder.json").write_text((path / "decoder.json").read_text())
    (bad / "decoder.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(RRError, match="corrupt"):
        load_decoder(bad)
    old = tmp_path / "old"
    old.mkdir()
    cfg = json.loads((path / "decoder.json").read_text())
    (old / "decoder.json").write_text(json.dumps({**cfg, "format": 0}))
    (old / "decoder.safetensors").write_bytes((path / "decoder.safetensors").read_bytes())
    with pytest.raises(RRError, match="format 0, this rr reads 1"):
        load_decoder(old)
    partial = type(dec)(["q_proj"], 4, 2, "x", dec.scores[:1])
    with pytest.raises(RRError, match="no mapping for 'k_proj' layers"):
        partial.params("k_proj", 0.0)
    for views, rank, msg in (
        (0, 8, "--views"),
        (17, 8, "--views"),
        (4, 0, "--rank"),
        (4, 65, "--rank"),
    ):
        with pytest.raises(RRError, match=msg):
            check_range(views, rank)


def test_r2f_commands_bad_input_is_one_line(tmp_path, tiny_folder):
    cases = [
        (["r2f", "check", "--decoder", str(tmp_path), "--model", str(tiny_folder)],
         "not a decoder folder"),
        (["r2f", "fit", "--proxy", str(tiny_folder), "--out", str(tmp_path / "d"), "--views", "0"],
         "--views must be between 1 and 16"),
        (["r2f", "fit", "--proxy", str(tiny_folder), "--out", str(tmp_path / "d"), "--rank", "99"],
         "--rank must be between 1 and 64"),
        (["release", "--run", str(tmp_path), "--update", "r2f"], "--update r2f needs --decoder"),
        (["r2f", "check", "--decoder", str(tmp_path), "--model", str(tiny_folder), "--views-from",
          "both"], "--views-from takes paraphrases or projections, not 'both'"),
        (["release", "--run", str(tmp_path), "--update", "r2f", "--decoder", str(tmp_path),
          "--r2f-views", "both"], "unknown view source 'both'"),
    ]  # fmt: skip
    for args, msg in cases:
        out = run_rr(*args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and msg in lines[0], (args, out.stderr)


def test_fit_check_and_release_with_r2f_through_the_command_line(tiny_folder, revealed, tmp_path):
    dec_dir, fit_json, check_json = tmp_path / "dec", tmp_path / "fit.json", tmp_path / "chk.json"
    fit = run_rr(
        "r2f", "fit", "--proxy", str(tiny_folder), "--out", str(dec_dir), "--views", "2",
        "--rank", "4", "--prompts", "12", "--json", str(fit_json),
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr
    assert "cosine learned" in fit.stdout and (dec_dir / "decoder.safetensors").is_file()
    figs = json.loads(fit_json.read_text())
    assert {"cosine_learned", "cosine_analytic", "layers"} <= set(figs)
    assert set(figs["layers"]["q_proj"]) >= {"cosine_learned", "cosine_analytic"}
    chk = run_rr(
        "r2f", "check", "--decoder", str(dec_dir), "--model", str(tiny_folder),
        "--prompts", "4", "--json", str(check_json),
    )  # fmt: skip
    assert chk.returncode == 0, chk.stderr
    assert json.loads(check_json.read_text())["layers"]["down_proj"]["n"] == 2
    chk = run_rr(
        "r2f", "check", "--decoder", str(dec_dir), "--model", str(tiny_folder),
        "--prompts", "4", "--views-from", "projections", "--json", str(check_json),
    )  # fmt: skip
    assert chk.returncode == 0, chk.stderr
    assert json.loads(check_json.read_text())["views_from"] == "projections"

    run = copy_run(revealed, tmp_path)
    rel = run_rr(
        "release", "--run", str(run), "--rounds", "2", "--update", "r2f", "--decoder",
        str(dec_dir), "--steps", "2", "--probes", "2", "--qa", "2", "--reveal-budget", "4",
        "--batch-size", "2", "--rank", "4", "--max-ppl-ratio", "100",
    )  # fmt: skip
    assert rel.returncode == 0, rel.stderr
    from safetensors.torch import load_file

    from reveal_release.train.lora import read_adapter

    ab = read_adapter(run / "round-1" / "adapter")
    assert len(ab) == 14 and all(a.shape[0] == 4 for a, _ in ab.values())
    merged, base = (
        load_file(run / "model" / "model.safetensors"),
        load_file(tiny_folder / "model.safetensors"),
    )
    key = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(merged[key], base[key])
    # Round 2's update avoids round 1's subspace.
    a1 = read_adapter(run / "round-1" / "adapter")
    a2 = read_adapter(run / "round-2" / "adapter")
    for k in a1:
        overlap = (a2[k][0] @ a1[k][0].T).abs().max() / (a2[k][0].norm() * a1[k][0].norm())
        assert overlap < 1e-3, k
    exp = run_rr(
        "export", "--run", str(run), "--out", str(tmp_path / "exp"), "--format", "adapters"
    )
    assert exp.returncode == 0, exp.stderr


def test_the_r2f_step_moves_each_layer_by_its_share_of_the_weight_norm(
    fitted, tiny_model, tmp_path
):
    # --r2f-step is R2F's own step size (relative to each layer's weight norm), apart from --lr.
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.updates import UPDATES, RoundInputs
    from reveal_release.train.lora import delta_weights

    _, _, path = fitted
    model = _llama(tiny_model.tokenizer, 64, 2)
    rows = [{"prompt": "Write a function.", "response": "def f(x): return x + 1"},
            {"prompt": "Reverse a list.", "response": "def rev(xs): return xs[::-1]"}]  # fmt: skip
    deltas = {}
    for step in (0.01, 0.02):
        cfg = ReleaseConfig(update="r2f", decoder=str(path), r2f_step=step, steps=1,
                            batch_size=2, rank=4, target_modules=KINDS, lr=0.5,
                            r2f_precondition="none")  # fmt: skip
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        UPDATES.get("r2f")(
            RoundInputs(model=model, tokenizer=tiny_model.tokenizer, forget=rows, retain=[],
                        earlier_a=[], cfg=cfg, round_=1, workdir=tmp_path, on_step=None),
            tmp_path / f"adapter-{step}",
        )  # fmt: skip
        assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
        deltas[step] = delta_weights(tmp_path / f"adapter-{step}")
    weights = dict(model.named_parameters())
    for key, d in deltas[0.01].items():
        w = weights[key.removeprefix("base_model.model.") + ".weight"]
        assert float(d.norm()) <= 0.01 * float(w.norm()) * 1.001  # rank-4 part of that step
        assert float(d.norm()) > 0.2 * 0.01 * float(w.norm())
        assert torch.allclose(deltas[0.02][key], 2 * d, rtol=1e-3, atol=1e-7)  # not --lr's
    # each preconditioner steps the same size along another direction (galore's step has the
    # module's rank, so the module keeps all of it)
    for name in ("factored", "whiten", "galore"):
        cfg = ReleaseConfig(update="r2f", decoder=str(path), r2f_step=0.01, steps=1, batch_size=2,
                            rank=4, target_modules=KINDS, r2f_precondition=name)  # fmt: skip
        UPDATES.get("r2f")(
            RoundInputs(model=model, tokenizer=tiny_model.tokenizer, forget=rows, retain=[],
                        earlier_a=[], cfg=cfg, round_=1, workdir=tmp_path, on_step=None),
            tmp_path / name,
        )  # fmt: skip
        for key, d in delta_weights(tmp_path / name).items():
            w = weights[key.removeprefix("base_model.model.") + ".weight"]
            assert float(d.norm()) <= 0.01 * float(w.norm()) * 1.001
            assert not torch.allclose(d, deltas[0.01][key], atol=1e-6), (name, key)
            if name == "galore":
                assert float(d.norm()) == pytest.approx(0.01 * float(w.norm()), rel=1e-3)


def test_a_step_along_a_given_gradient_moves_each_layer_against_it(fitted, tiny_model):
    # benchmarks/r2f_oracle.py's true-gradient row: `gradient` replaces the decoding, and the
    # layer moves by step_size along -g/||g||; without it the step follows the decoder.
    from reveal_release.r2f.step import Factored, Projected, decoded_step

    dec, _, _ = fitted
    model = _llama(tiny_model.tokenizer, 64, 2)
    layers = linear_layers(model, KINDS)
    views = [random_a(layers, dec.rank, seed=s) for s in range(dec.views)]
    cap = Capture()
    for a in views:  # one pass per view; the true gradients add up over them
        capture(model, layers, nll_loss(_batch(tiny_model.tokenizer)), a, cap, True, 64)
    mods = dict(model.named_modules())
    before = {ly.name: mods[ly.name].weight.detach().clone() for ly in layers}
    sizes = {ly.name: 0.01 for ly in layers}
    true = lambda ly: cap.true[ly.name]  # noqa: E731
    norms = decoded_step(dec, layers, mods, cap, views, sizes, gradient=true)
    for ly, n in zip(layers, norms, strict=True):
        g = cap.true[ly.name]
        assert n == pytest.approx(float(g.norm()), rel=1e-6)
        moved = mods[ly.name].weight - before[ly.name]
        torch.testing.assert_close(moved, -0.01 * g / g.norm(), rtol=1e-3, atol=1e-7)
    for ly in layers:
        mods[ly.name].weight.data.copy_(before[ly.name])
    decoded_step(dec, layers, mods, cap, views, sizes)
    ly = layers[0]
    moved = mods[ly.name].weight - before[ly.name]
    assert not torch.allclose(moved, -0.01 * cap.true[ly.name] / cap.true[ly.name].norm())
    # --r2f-precondition factored: the same step along the preconditioned gradient instead
    for ly in layers:
        mods[ly.name].weight.data.copy_(before[ly.name])
    decoded_step(dec, layers, mods, cap, views, sizes, gradient=true, precondition=Factored())
    for ly in layers:
        p = Factored()("w", cap.true[ly.name])
        moved = mods[ly.name].weight - before[ly.name]
        torch.testing.assert_close(moved, -0.01 * p / p.norm(), rtol=1e-3, atol=1e-7)
        assert not torch.allclose(moved, -0.01 * cap.true[ly.name] / cap.true[ly.name].norm())
    # galore keeps Adam's magnitude, here far under norm 1 (a large eps): not renormalised
    for ly in layers:
        mods[ly.name].weight.data.copy_(before[ly.name])
    pre = Projected(2, eps=1.0)
    decoded_step(dec, layers, mods, cap, views, sizes, gradient=true, precondition=pre)
    for ly in layers:
        p = Projected(2, eps=1.0)("w", cap.true[ly.name])
        assert float(p.norm()) < 0.5
        moved = mods[ly.name].weight - before[ly.name]
        torch.testing.assert_close(moved, -0.01 * p, rtol=1e-3, atol=1e-8)


def test_momentum_keeps_the_direction_noisy_steps_share():
    # --r2f-momentum: unit directions averaged over steps, each weighted by 1 - beta; beta 0
    # steps along each step's own. Decoded gradients at cosine about 0.5 to the true one:
    # the average's cosine is well above a single step's.
    from reveal_release.r2f.step import Momentum

    gen = torch.Generator().manual_seed(0)
    true = torch.randn(32, 48, generator=gen)
    true /= true.norm()

    def noisy() -> torch.Tensor:
        noise = torch.randn(32, 48, generator=gen)
        g = true + 1.7 * noise / noise.norm()
        return g / g.norm()

    off, on = Momentum(0.0), Momentum(0.9)
    unit = noisy()
    assert torch.equal(off("w", unit), unit)
    first = on("w", unit)
    torch.testing.assert_close(first, unit)  # the average starts at the first step
    second = noisy()
    want = 0.9 * unit + 0.1 * second
    torch.testing.assert_close(on("w", second), want / want.norm())
    singles, heads = [], []
    for _ in range(40):
        unit = noisy()
        singles.append(float((unit * true).sum()))
        heads.append(float((on("w", unit) * true).sum()))
    assert 0.4 < sum(singles) / 40 < 0.65
    assert sum(heads[-10:]) / 10 > 0.85
    assert set(on.avg) == {"w"} and not off.avg


def test_the_factored_preconditioner_scales_rows_and_columns_as_adafactor_does():
    # --r2f-precondition factored: the gradient over sqrt(r c^T / mean(r)), r and c the running
    # means of its squares' rows and columns. Its rank is kept (a row and column scaling), a
    # gradient whose magnitudes are a row scale times a column scale becomes its signs (Adam's
    # first step), and a later step divides by the decayed means.
    from reveal_release.r2f.step import Factored

    gen = torch.Generator().manual_seed(0)
    rows, cols = torch.rand(24, generator=gen) + 0.1, torch.rand(40, generator=gen) * 100 + 0.1
    signs = torch.randint(0, 2, (24, 40), generator=gen).float() * 2 - 1
    pre = Factored(beta2=0.5)
    torch.testing.assert_close(pre("w", signs * rows[:, None] * cols[None, :]), signs)
    low = torch.randn(24, 3, generator=gen) @ torch.randn(3, 40, generator=gen)
    g2 = low**2 + pre.eps
    r = 0.5 * (signs * rows[:, None] * cols[None, :]) ** 2 + 0.5 * g2
    want = low * (r.mean(1).mean().sqrt() / r.mean(1).sqrt()[:, None] / r.mean(0).sqrt()[None, :])
    got = pre("w", low)
    torch.testing.assert_close(got, want)
    assert torch.linalg.matrix_rank(got) == 3
    assert set(pre.state) == {"w"}


def test_the_galore_preconditioner_runs_adam_on_a_fixed_rank_r_projection():
    # --r2f-precondition galore: P = the first gradient's top-r left singular vectors, kept for
    # the round; each step is P times Adam's bias-corrected step on P^T g over sqrt(r d_in)
    # (the signs of P^T g at the first step: norm 1), so every step, and their sum, has rank r.
    from reveal_release.r2f.step import Projected

    gen = torch.Generator().manual_seed(0)
    first = torch.randn(24, 40, generator=gen)
    pre = Projected(rank=3, beta1=0.5, beta2=0.75)
    p = torch.linalg.svd(first).U[:, :3]
    got = pre("w", first)
    torch.testing.assert_close(got, p @ torch.sign(p.T @ first) / 120**0.5)
    assert float(got.norm()) == pytest.approx(1.0, rel=1e-5)
    second = torch.randn(24, 40, generator=gen)
    a, b = p.T @ first, p.T @ second
    m, v = (0.25 * a + 0.5 * b) / 0.75, (0.1875 * a**2 + 0.25 * b**2) / 0.4375
    got = pre("w", second)
    want = p @ (m / (v.sqrt() + pre.eps)) / 120**0.5
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    total = sum(pre("w", torch.randn(24, 40, generator=gen)) for _ in range(5)) + got
    assert torch.linalg.matrix_rank(total) == 3
    assert torch.linalg.matrix_rank(first) == 24


def test_galore_variants_a_random_input_basis_and_a_renewed_projection():
    # basis "random" (LoRA-FA): a fixed orthonormal input basis Q drawn from the layer's name,
    # the step Adam(g Q) Q^T; refresh k: P taken again from the gradient every k steps.
    from reveal_release.r2f.step import Projected

    gen = torch.Generator().manual_seed(1)
    g1, g2 = torch.randn(24, 40, generator=gen), torch.randn(24, 40, generator=gen)
    fa = Projected(rank=3, basis="random")
    q = fa._basis("w", g1)
    torch.testing.assert_close(q.T @ q, torch.eye(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(fa("w", g1), torch.sign(g1 @ q) @ q.T / 72**0.5)
    torch.testing.assert_close(Projected(rank=3, basis="random")._basis("w", g2), q)
    assert not torch.allclose(fa._basis("v", g1), q)
    renew = Projected(rank=3, refresh=1)
    renew("w", g1)
    renew("w", g2)
    p2 = torch.linalg.svd(g2).U[:, :3]
    torch.testing.assert_close(renew.state["w"]["basis"], p2)
    kept = Projected(rank=3)
    kept("w", g1)
    kept("w", g2)
    torch.testing.assert_close(kept.state["w"]["basis"], torch.linalg.svd(g1).U[:, :3])


def test_whitening_divides_the_gradient_by_the_damped_input_covariance():
    # --r2f-precondition whiten: g (X^T X / n + lam I)^-1, lam = damping x the covariance's
    # mean eigenvalue; an input direction seen 100x as strongly is stepped along ~100x less.
    from reveal_release.r2f.step import Whiten

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 16, generator=gen)
    x[:, 0] *= 10  # one loud input direction (variance 100x)
    g = torch.randn(8, 16, generator=gen)
    got = Whiten(damping=0.1)("w", g, [x[:120], x[120:]])
    cov = x.T @ x / 200
    lam = 0.1 * float(cov.diagonal().mean())
    torch.testing.assert_close(got @ (cov + lam * torch.eye(16)), g, rtol=1e-4, atol=1e-5)
    loud = (got[:, 0].norm() / g[:, 0].norm()) / (got[:, 1:].norm() / g[:, 1:].norm())
    assert loud < 0.05
    assert torch.equal(Whiten()("w", g, None), g)  # no inputs kept: the gradient as it is


def test_the_retain_guard_takes_back_half_a_step_until_the_retain_loss_holds(
    fitted, tiny_model, tmp_path
):
    # --r2f-retain-guard: a step that raises the retain batch's NLL by more than the guard is
    # halved (at most 4 times); the round's change is then that share of the unguarded one.
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.updates import UPDATES, RoundInputs
    from reveal_release.train.lora import delta_weights

    _, _, path = fitted
    tok = tiny_model.tokenizer
    model = _llama(tok, 64, 2)
    forget = [{"prompt": "Write a function.", "response": "def f(x): return x + 1"},
              {"prompt": "Reverse a list.", "response": "def r(xs): return xs[::-1]"}]  # fmt: skip
    retain = forget  # the step raises their NLL for sure (retain weight 0: NPO alone)
    kept, deltas = {}, {}
    for guard in (0.0, 1e-4):
        cfg = ReleaseConfig(update="r2f", decoder=str(path), r2f_step=0.3, steps=1,
                            batch_size=2, rank=4, target_modules=KINDS, retain_weight=0.0,
                            r2f_retain_guard=guard)  # fmt: skip
        history: list[dict] = []
        UPDATES.get("r2f")(
            RoundInputs(model=model, tokenizer=tok, forget=forget, retain=retain, earlier_a=[],
                        cfg=cfg, round_=1, workdir=tmp_path,
                        on_step=lambda n, h, seen=history: seen.append(h)),
            tmp_path / f"adapter-{guard}",
        )  # fmt: skip
        kept[guard] = history[0].get("step_kept")
        deltas[guard] = delta_weights(tmp_path / f"adapter-{guard}")
    assert kept[0.0] is None  # off: no extra forward, nothing recorded
    assert kept[1e-4] in (0.5, 0.25, 0.125, 0.0625)
    for key, d in deltas[0.0].items():
        torch.testing.assert_close(deltas[1e-4][key], kept[1e-4] * d, rtol=1e-3, atol=1e-7)


def test_the_retain_guard_works_with_the_views_split_into_passes(fitted, tiny_model, tmp_path):
    # The retain batch runs in the first of several passes; the guard reads its NLL from there.
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.updates import UPDATES, RoundInputs

    _, _, path = fitted
    rows = [{"prompt": "Write a function.", "response": "def f(x): return x + 1"},
            {"prompt": "Name a colour.", "response": "Blue is a colour."}]  # fmt: skip
    cfg = ReleaseConfig(update="r2f", decoder=str(path), r2f_step=0.3, steps=1, batch_size=2,
                        rank=4, target_modules=KINDS, r2f_retain_guard=1e-4,
                        r2f_views_per_pass=1)  # fmt: skip
    history: list[dict] = []
    UPDATES.get("r2f")(
        RoundInputs(model=_llama(tiny_model.tokenizer, 64, 2), tokenizer=tiny_model.tokenizer,
                    forget=rows[:1], retain=rows, earlier_a=[], cfg=cfg, round_=1,
                    workdir=tmp_path, on_step=lambda n, h: history.append(h)),
        tmp_path / "adapter",
    )  # fmt: skip
    assert history[0]["step_kept"] in (1.0, 0.5, 0.25, 0.125, 0.0625)


def test_subnormals_are_flushed_only_while_sketches_are_taken():
    """no_denormals: a subnormal float becomes zero inside the block and stays one outside."""
    from reveal_release.r2f.sketch import no_denormals

    if not torch.set_flush_denormal(False):  # the CPU cannot flush them (not x86 with SSE3)
        pytest.skip("this CPU does not flush subnormals")
    tiny = torch.tensor([1e-40], dtype=torch.float32)
    assert float(tiny * 1.0) != 0.0
    with no_denormals():
        assert float(tiny * 1.0) == 0.0
    assert float(tiny * 1.0) != 0.0


def test_options_of_the_other_update_are_refused_when_given_and_dropped_when_a_spec_sets_them(
    fitted, revealed, tmp_path, capsys
):
    from reveal_release.release.command import _settings
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.targets.spec import load_target

    _, _, dec = fitted
    run = copy_run(revealed, tmp_path)
    out = run_rr(
        "release", "--run", str(run), "--update", "r2f", "--decoder", str(dec),
        "--tamper-quant", "int4", "--max-epochs", "3",
    )  # fmt: skip
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "--max-epochs, --tamper-quant work with --update lora only, not --update r2f" in lines[0]
    assert not (run / "round-1").exists()
    # and the other way round: R2F's own options given to a LoRA release
    out = run_rr("release", "--run", str(run), "--r2f-step", "2e-3", "--r2f-precondition", "whiten")
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    want = "--r2f-step, --r2f-precondition work with --update r2f only, not --update lora"
    assert want in lines[0]
    assert not (run / "round-1").exists()
    # The person spec sets generic-dpo, a simulated attacker and a gain: R2F keeps the loss and
    # the gain (every update's) and puts the LoRA-only ones and the LoRA-tuned attacker back to
    # their defaults; an attacker given on the command line is kept.
    person = load_target("person")
    cfg = ReleaseConfig(update="r2f", decoder=str(dec))
    got = _settings(cfg, person, "default", frozenset({"update", "decoder"}), "hf")
    default = ReleaseConfig()
    assert (got.tamper_steps, got.max_epochs) == (default.tamper_steps, default.max_epochs)
    assert got.loss == "generic-dpo" and got.snap_gain == 2 and got.unused_by_update() == {}
    given = frozenset({"update", "decoder", "tamper_steps"})
    cfg = ReleaseConfig(update="r2f", decoder=str(dec), tamper_steps=2)
    got = _settings(cfg, person, "default", given, "hf")
    assert (got.tamper_steps, got.tamper_lr) == (2, default.tamper_lr)
    said = capsys.readouterr()
    assert "--update r2f does not use --max-epochs" in (said.out + said.err)
    lora = _settings(ReleaseConfig(), person, "default", frozenset(), "hf")
    assert lora.loss == "generic-dpo" and lora.tamper_steps == 3
