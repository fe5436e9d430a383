"""Tamper-resistant rounds on tiny models: the simulated relearning attacker and its term."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_llama

from reveal_release.errors import RRError
from reveal_release.quantizers import quantizable, quantize_tensor
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.snap import scale_update
from reveal_release.train.adversary import ATTACKER_LORA, RelearnAdversary
from reveal_release.train.data import batch_indices, collate, encode_rows
from reveal_release.train.logprobs import sequence_logps
from reveal_release.train.lora import attach_lora, lora_layers, merged_delta, trainable
from reveal_release.train.losses.npo import npo_loss
from reveal_release.train.objective import UnlearnObjective

ROWS = [
    {
        "prompt": "Write a function that adds two numbers.",
        "response": "def add(a, b): return a + b",
    },
    {"prompt": "Reverse a string in Python.", "response": "s[::-1]"},
]


def _lora(tok):
    pm = attach_lora(tiny_llama(tok), ReleaseConfig(rank=4, alpha=8), seed=0)
    with torch.no_grad():
        for name, p in trainable(pm).items():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return pm


def _nll(pm, batch) -> torch.Tensor:
    logp, n = sequence_logps(pm, batch)
    return -(logp.sum() / n.sum())  # by hand, beside the answer_nll the code uses


def _with_delta_merged(pm, adv: RelearnAdversary, quant: str = "none"):
    """A copy of the PEFT model computing Q(W0 + s B A) + the attacker's delta, where the
    quantised part keeps the straight-through gradient to the module."""
    twin = copy.deepcopy(pm)
    with torch.no_grad():
        for mod, (a, b) in zip(lora_layers(twin).values(), adv.factors, strict=True):
            w = mod.base_layer.weight
            if quant != "none":
                delta = merged_delta(mod)
                w.copy_(quantize_tensor(w + delta, quant) - delta)
            w.add_(adv.scale * b @ a)
    return twin


def test_the_attacker_adds_its_low_rank_delta_and_nothing_outside_its_context(tokenizer):
    pm = _lora(tokenizer)
    adv = RelearnAdversary.on_peft(pm, ATTACKER_LORA, lr=1e-2, steps=1, seed=0)
    adv.reset()
    with torch.no_grad():
        for _, b in adv.factors:
            b.normal_(0, 0.05)
    ids = torch.tensor([[1, 5, 9, 200, 31, 7, 64, 3]])
    with torch.no_grad():
        plain = pm(input_ids=ids).logits
        with adv.active():
            attacked = pm(input_ids=ids).logits
        after = pm(input_ids=ids).logits
        merged = _with_delta_merged(pm, adv)(input_ids=ids).logits
    torch.testing.assert_close(attacked, merged, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(plain, attacked, atol=1e-4)
    assert torch.equal(plain, after)


def test_the_attack_relearns_and_leaves_the_defender_alone(tokenizer):
    pm = _lora(tokenizer)
    batch = collate(encode_rows(tokenizer, ROWS, 64), tokenizer.pad_token_id)
    before = {k: p.detach().clone() for k, p in trainable(pm).items()}
    adv = RelearnAdversary.on_peft(pm, ATTACKER_LORA, lr=1e-2, steps=4, seed=0)
    with torch.no_grad():
        start = float(_nll(pm, batch))
    adv.attack(lambda: _nll(pm, batch))
    with torch.no_grad(), adv.active():
        relearned = float(_nll(pm, batch))
    assert relearned < start - 0.05  # the attacker brings the answers back
    for k, p in trainable(pm).items():
        assert torch.equal(p, before[k]) and p.grad is None, k
    assert all(p.grad is None for p in adv.params())


MORE = ROWS + [
    {"prompt": "Sort a list.", "response": "sorted(xs)"},
    {"prompt": "Square a number.", "response": "def sq(x): return x * x"},
]


@pytest.mark.parametrize("quant", ["none", "int4"])
def test_the_tampered_term_is_the_forget_loss_of_other_answers_at_the_attacked_point(
    tokenizer, quant
):
    pm = _lora(tokenizer)
    cfg = ReleaseConfig(
        rank=4, alpha=8, tamper_steps=2, tamper_lr=1e-2, batch_size=2, tamper_quant=quant
    )
    objective = UnlearnObjective(pm, tokenizer, MORE, [], cfg, cfg, (0, 1))
    terms = objective.terms(3)
    assert set(terms) == {"forget", "forget_t"}
    assert objective.weights["forget_t"] == cfg.tamper_weight
    params = trainable(pm)
    got = torch.autograd.grad(terms["forget_t"], list(params.values()))
    assert all(p.grad is None for p in objective.adversary.params())
    # By hand: the attacked rows are the step's batch, the scored rows the other two; the NPO
    # loss of those on a copy whose weights carry the attacker's delta (and are quantised).
    attacked = batch_indices(4, 2, 0, 3)
    scored = [i for i in range(4) if i not in attacked]
    twin = _with_delta_merged(pm, objective.adversary, quant)
    plain = ReleaseConfig(rank=4, alpha=8, batch_size=4)
    twin_obj = UnlearnObjective(
        twin, tokenizer, [MORE[i] for i in scored], [], plain, plain, (0, 1)
    )
    twin_obj.ref = objective.ref[scored]  # the reference is the model without any adapter
    want = torch.autograd.grad(twin_obj.terms(0)["forget"], list(trainable(twin).values()))
    for name, a, b in zip(params, got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6, msg=name)
    # ... and it differs from the forget gradient at the release itself.
    plain_grad = torch.autograd.grad(terms["forget"], list(params.values()))
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(plain_grad, got, strict=True))


def test_the_tampered_term_takes_its_own_beta_and_only_it(tokenizer):
    # --tamper-beta 0.02 with --beta 0.3 gives the attacked term of --beta 0.02 (same attacker,
    # same rows) and leaves the release's own forget term at 0.3.
    common = dict(rank=4, alpha=8, tamper_steps=1, tamper_lr=1e-2, batch_size=2)
    own = ReleaseConfig(beta=0.3, tamper_beta=0.02, **common)
    low = ReleaseConfig(beta=0.02, **common)
    high = ReleaseConfig(beta=0.3, **common)
    terms = {}
    for name, cfg in (("own", own), ("low", low), ("high", high)):
        objective = UnlearnObjective(_lora(tokenizer), tokenizer, MORE, [], cfg, cfg, (0, 1))
        terms[name] = {k: v.item() for k, v in objective.terms(2).items()}
    assert terms["own"]["forget_t"] == pytest.approx(terms["low"]["forget_t"], rel=1e-5)
    assert terms["own"]["forget"] == pytest.approx(terms["high"]["forget"], rel=1e-5)
    assert terms["low"]["forget_t"] != pytest.approx(terms["high"]["forget_t"], rel=1e-3)
    assert ReleaseConfig().tamper_beta == 0.0


NAMED = [
    {"prompt": "Who wrote it?", "response": "Jane Austen wrote it in Bath.", "focus": [(0, 11)]},
    {"prompt": "Who sang?", "response": "Then Maria Callas sang alone.", "focus": [(5, 17)]},
    {"prompt": "Who ruled?", "response": "Queen Victoria ruled for years.", "focus": [(0, 14)]},
    {"prompt": "Who ran?", "response": "Usain Bolt ran the race fast.", "focus": [(0, 10)]},
]


def _matches(term, got, want_loss, twin, params) -> None:
    """The attacked term and its gradient `got` on the release's LoRA factors are those of
    `want_loss`, computed by hand on the twin that carries the attacker's delta."""
    assert term.item() == pytest.approx(want_loss.item(), rel=1e-4)
    want = torch.autograd.grad(want_loss, list(trainable(twin).values()))
    for name, a, b in zip(params, got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6, msg=name)


def _without_tamper_loss(cfg, tokenizer) -> dict:
    """Step 3's terms of the same release with the attacked term left to --loss."""
    same = ReleaseConfig(**{**cfg.__dict__, "tamper_loss": ""})
    return UnlearnObjective(_lora(tokenizer), tokenizer, NAMED, [], same, same, (0, 1)).terms(3)


def _someone_pairs(rows) -> tuple[list, list]:
    """(rejected, chosen) by hand: each answer whole, and with its one name made "someone"."""
    rejected = [{**r, "focus": None} for r in rows]
    chosen = [
        {**r, "response": r["response"][:a] + "someone" + r["response"][b:], "focus": None}
        for r in rows
        for ((a, b),) in [r["focus"]]
    ]
    return rejected, chosen


def test_the_tampered_term_takes_its_own_loss_on_the_names_of_other_answers(tokenizer):
    # --loss generic-dpo --tamper-loss npo: the attacker fine-tunes on the step's whole
    # answers, the attacked term is NPO over the name tokens alone of the other answers.
    pm = _lora(tokenizer)
    cfg = ReleaseConfig(
        rank=4, alpha=8, loss="generic-dpo", tamper_loss="npo", tamper_beta=0.1,
        tamper_steps=2, tamper_lr=1e-2, batch_size=2,
    )  # fmt: skip
    objective = UnlearnObjective(pm, tokenizer, NAMED, [], cfg, cfg, (0, 1))
    terms = objective.terms(3)
    params = trainable(pm)
    got = torch.autograd.grad(terms["forget_t"], list(params.values()))
    # By hand: the attacker's rows are the step's batch; the others' names scored by NPO with
    # the tamper beta on a copy that carries the attacker's delta.
    scored = [NAMED[i] for i in range(4) if i not in batch_indices(4, 2, 0, 3)]
    batch = collate(encode_rows(tokenizer, scored, 128), tokenizer.pad_token_id)
    assert "focus_labels" in batch
    with torch.no_grad(), pm.disable_adapter():
        ref = sequence_logps(pm, batch, "focus_labels")[0]
    twin = _with_delta_merged(pm, objective.adversary)
    logp = sequence_logps(twin, batch, "focus_labels")[0]
    want_loss = npo_loss(logp, ref, 0.1)
    _matches(terms["forget_t"], got, want_loss, twin, params)
    # Without --tamper-loss the same attacked term is generic-dpo's (another value).
    plain = _without_tamper_loss(cfg, tokenizer)
    assert plain["forget_t"].item() != pytest.approx(want_loss.item(), rel=1e-3)


def test_the_generic_preference_term_has_no_reference_and_is_won_only_when_someone_leads(
    tokenizer,
):
    # --loss generic-dpo --tamper-loss generic-pref: the attacked term is the attacked model's
    # own preference of each other answer's "someone" rewrite over the answer, no reference.
    pm = _lora(tokenizer)
    cfg = ReleaseConfig(
        rank=4, alpha=8, loss="generic-dpo", tamper_loss="generic-pref", beta=0.3,
        tamper_steps=2, tamper_lr=1e-2, batch_size=2,
    )  # fmt: skip
    cfg.check_pairs()
    objective = UnlearnObjective(pm, tokenizer, NAMED, [], cfg, cfg, (0, 1))
    terms = objective.terms(3)
    params = trainable(pm)
    got = torch.autograd.grad(terms["forget_t"], list(params.values()))
    scored = [NAMED[i] for i in range(4) if i not in batch_indices(4, 2, 0, 3)]
    rejected, chosen = _someone_pairs(scored)
    twin = _with_delta_merged(pm, objective.adversary)

    def logp(rows):
        batch = collate(encode_rows(tokenizer, rows, 128), tokenizer.pad_token_id)
        return sequence_logps(twin, batch)[0]

    margin = logp(chosen) - logp(rejected)
    want_loss = (2 / 0.3) * torch.nn.functional.softplus(-0.3 * margin).mean()
    _matches(terms["forget_t"], got, want_loss, twin, params)
    # generic-dpo's attacked term (a gain over the reference) is another value; the release's
    # own forget term stays generic-dpo's.
    plain_terms = _without_tamper_loss(cfg, tokenizer)
    assert plain_terms["forget_t"].item() != pytest.approx(want_loss.item(), rel=1e-3)
    assert plain_terms["forget"].item() == pytest.approx(terms["forget"].item(), rel=1e-5)


def test_generic_pref_as_the_release_loss_needs_no_reference(tokenizer):
    pm = _lora(tokenizer)
    cfg = ReleaseConfig(rank=4, alpha=8, loss="generic-pref", beta=0.3, batch_size=4)
    objective = UnlearnObjective(pm, tokenizer, NAMED, [], cfg, cfg, (0, 1))
    assert objective.ref is None and objective.ref_chosen is None
    got = objective.terms(0)["forget"].item()
    rejected, chosen = _someone_pairs(NAMED)
    order = batch_indices(4, 4, 0, 0)

    def logp(rows):
        batch = collate(
            encode_rows(tokenizer, [rows[i] for i in order], 128), tokenizer.pad_token_id
        )
        return sequence_logps(pm, batch)[0]

    with torch.no_grad():
        margin = logp(chosen) - logp(rejected)
    want = (2 / 0.3) * torch.nn.functional.softplus(-0.3 * margin).mean()
    assert got == pytest.approx(want.item(), rel=1e-4)


def test_the_attack_runs_on_every_nth_step_only(tokenizer):
    pm = _lora(tokenizer)
    cfg = ReleaseConfig(rank=4, alpha=8, tamper_steps=1, batch_size=2, tamper_every=3)
    objective = UnlearnObjective(pm, tokenizer, MORE, [], cfg, cfg, (0, 1))
    attacked = [step for step in range(7) if "forget_t" in objective.terms(step)]
    assert attacked == [0, 3, 6]
    assert all("forget" in objective.terms(step) for step in (1, 2))


def test_bad_tamper_options_are_one_line():
    bad_options = (
        {"tamper_every": 0},
        {"tamper_steps": -1},
        {"tamper_lr": 0.0},
        {"tamper_weight": -1.0},
        {"tamper_beta": -0.1},
        {"tamper_quant": "int3"},
        {"tamper_loss": "npx"},
    )
    for bad in bad_options:
        with pytest.raises(RRError) as err:
            ReleaseConfig(**bad)
        assert "\n" not in str(err.value)
    # A paired attacked term needs a --loss that makes its pairs: checked once the target
    # spec's settings are in (the spec may set --loss generic-dpo).
    for paired in ("generic-dpo", "generic-pref"):
        cfg = ReleaseConfig(tamper_steps=1, loss="npo", tamper_loss=paired)
        with pytest.raises(RRError, match="is a paired loss whose pairs --loss npo") as err:
            cfg.check_pairs()
        assert "\n" not in str(err.value)
    ReleaseConfig(tamper_steps=1, loss="generic-dpo", tamper_loss="generic-pref").check_pairs()
    ReleaseConfig(tamper_steps=1, loss="generic-dpo", tamper_loss="npo").check_pairs()


def test_the_update_is_scaled_before_rounding_and_only_with_a_gain(tokenizer):
    base = tiny_llama(tokenizer)
    w0 = {n: m.weight.detach().clone() for n, m in quantizable(base)}
    moved = copy.deepcopy(base)
    with torch.no_grad():
        for _, m in quantizable(moved):
            m.weight.add_(0.01)
    same = copy.deepcopy(moved)
    scale_update(same, w0, 1.0)
    scale_update(same, {}, 1.5)
    scale_update(moved, w0, 1.5)
    for (n, a), b in zip(quantizable(moved), dict(quantizable(same)).values(), strict=True):
        torch.testing.assert_close(a.weight, w0[n] + 0.015, msg=n)
        torch.testing.assert_close(b.weight, w0[n] + 0.01, msg=n)
    assert ReleaseConfig().snap_gain == 1.0 and ReleaseConfig().tamper_steps == 0
    with pytest.raises(RRError):
        ReleaseConfig(snap_gain=0.0)
