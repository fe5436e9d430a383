"""The training layer on a tiny random Llama: losses, the O-LoRA term, gradients, LoRA merge,
the optimiser loop with its guards and checkpoints, and the options of its configs."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from reveal_release.errors import RRError
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.orth import orth_penalty
from reveal_release.release.updates.lora import train_module
from reveal_release.train.data import IGNORE, collate, encode_rows
from reveal_release.train.logprobs import sequence_logps, token_logps
from reveal_release.train.lora import (
    a_matrices,
    apply_adapter,
    attach_lora,
    load_a_matrices,
    merge,
    save_adapter,
    trainable,
)
from reveal_release.train.losses import FORGET_LOSSES, RETAIN_LOSSES

ROWS = [
    {
        "prompt": "Write a function that adds two numbers.",
        "response": "def add(a, b):\n    return a + b",
    },
    {"prompt": "Reverse a string in Python.", "response": "s[::-1]"},
    {"prompt": "Print hello.", "response": "print('hello')"},
]
RETAIN = [
    {"prompt": "What colour is the sky?", "response": "The sky is blue on a clear day."},
    {"prompt": "Name a fruit.", "response": "An apple is a fruit."},
]


def fresh(tiny_model):
    """A private copy of the tiny model, so tests do not change the shared one."""
    return copy.deepcopy(tiny_model.model)


def test_orth_penalty_matches_a_hand_computation():
    a1 = {"m": torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])}
    a2 = {"m": torch.tensor([[0.0, 3.0, 0.0]]), "other": torch.ones(1, 3)}
    ak = {"m": torch.tensor([[1.0, -1.0, 1.0], [2.0, 0.0, 0.0]]), "other": torch.ones(2, 3)}
    # A1 Ak^T = [[1*1+0+2*1, 1*2], [-1, 0]] = [[3, 2], [-1, 0]] -> |.| sums to 6
    # A2 Ak^T = [[-3, 0]] -> 3; "other": ones(1,3) @ ones(3,2) = [[3, 3]] -> 6
    assert float(orth_penalty(ak, [a1, a2])) == pytest.approx(6 + 3 + 6)
    assert float(orth_penalty(ak, [])) == 0.0


def test_npo_matches_its_formula():
    cfg = ReleaseConfig(beta=0.5)
    logp = torch.tensor([-3.0, -10.0])
    ref = torch.tensor([-4.0, -9.0])
    n = torch.tensor([3, 5])
    expected = (
        sum((2 / 0.5) * math.log(1 + math.exp(lp - rp) ** 0.5) for lp, rp in [(-3, -4), (-10, -9)])
        / 2
    )
    assert float(FORGET_LOSSES.get("npo")()(logp, n, ref, cfg)) == pytest.approx(expected, rel=1e-6)
    # At the reference (p = p_ref) NPO is (2/beta) log 2 whatever beta is.
    assert float(FORGET_LOSSES.get("npo")()(ref, n, ref, cfg)) == pytest.approx(4 * math.log(2))
    simnpo = float(FORGET_LOSSES.get("simnpo")()(logp, n, None, cfg))
    want = (
        -(2 / 0.5)
        * sum(math.log(1 / (1 + math.exp(0.5 * lp / k))) for lp, k in [(-3, 3), (-10, 5)])
        / 2
    )
    assert simnpo == pytest.approx(want, rel=1e-6)
    assert float(FORGET_LOSSES.get("ga")()(logp, n, None, cfg)) == pytest.approx(-13 / 8)


def test_unknown_loss_names_the_choices():
    with pytest.raises(
        RRError,
        match="unknown forget loss 'nope': choose one of ga, generic, generic-dpo, generic-pref, "
        "npo",
    ):
        FORGET_LOSSES.get("nope")
    with pytest.raises(RRError, match="unknown retain loss"):
        RETAIN_LOSSES.get("nope")


def test_labels_mask_the_prompt(tiny_model):
    ex = encode_rows(tiny_model.tokenizer, ROWS[:1], 128)[0]
    n_prompt = sum(1 for t in ex.labels if t == IGNORE)
    answer = tiny_model.tokenizer.decode([t for t in ex.labels if t != IGNORE])
    assert n_prompt > 5 and "def add(a, b)" in answer


def test_only_round_k_receives_gradients(tiny_model):
    cfg = ReleaseConfig(rank=4, alpha=8)
    pm = attach_lora(fresh(tiny_model), cfg, seed=0)
    batch = collate(encode_rows(tiny_model.tokenizer, ROWS, 64), tiny_model.tokenizer.pad_token_id)
    logp, n = sequence_logps(pm, batch)
    (-logp.sum()).backward()
    with_grad = [n for n, p in pm.named_parameters() if p.grad is not None]
    assert with_grad and all(".lora_A.default." in n or ".lora_B.default." in n for n in with_grad)
    assert set(with_grad) == set(trainable(pm))
    # 2 layers x 7 modules x (A, B)
    assert len(with_grad) == 2 * 7 * 2


def test_merged_model_matches_the_adapter_model(tiny_model, tmp_path):
    cfg = ReleaseConfig(rank=4, alpha=8)
    pm = attach_lora(fresh(tiny_model), cfg, seed=0)
    with torch.no_grad():
        for name, p in trainable(pm).items():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # B = 0 at init would make the test trivial
    ids = torch.tensor([[1, 5, 9, 200, 31, 7]])
    with torch.no_grad():
        want = pm(input_ids=ids).logits
    save_adapter(pm, tmp_path / "adapter")
    merged = merge(pm)
    with torch.no_grad():
        got = merged(input_ids=ids).logits
        base = tiny_model.model(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, base, atol=1e-3)
    # Rebuilding from the saved adapter gives the same merged weights.
    rebuilt = apply_adapter(fresh(tiny_model), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(rebuilt(input_ids=ids).logits, got)
    assert set(load_a_matrices(tmp_path / "adapter")) == set(
        a_matrices(attach_lora(fresh(tiny_model), cfg, 1))
    )


def test_training_lowers_the_forget_likelihood_and_uses_the_orth_term(tiny_model, tmp_path):
    cfg = ReleaseConfig(rank=4, alpha=8, steps=6, batch_size=3, lr=5e-3, orth_weight=0.5)
    earlier = [
        {
            k: torch.randn_like(v)
            for k, v in a_matrices(attach_lora(fresh(tiny_model), cfg, 5)).items()
        }
    ]
    pm = attach_lora(fresh(tiny_model), cfg, seed=0)
    res = train_module(pm, tiny_model.tokenizer, ROWS, RETAIN, earlier, cfg, 2)
    assert res.stopped is None and res.steps == 6
    assert all("orth" in h and h["orth"] > 0 for h in res.history)
    assert res.history[-1]["forget"] < res.history[0]["forget"]


def test_nan_loss_stops_the_round_and_keeps_the_last_good_weights(tiny_model):
    cfg = ReleaseConfig(rank=4, alpha=8, steps=6, batch_size=3, lr=1e-3)
    pm = attach_lora(fresh(tiny_model), cfg, seed=0)
    params = trainable(pm)
    name = next(n for n in params if "lora_B" in n)
    seen = {}

    def blow_up_after_2(step, entry):
        if step == 1:
            seen["good"] = {n: p.detach().clone() for n, p in params.items()}
        if step == 2:  # a weight turns to inf, as after an overflow: step 3's loss is NaN
            with torch.no_grad():
                params[name][0, 0] = float("inf")

    res = train_module(pm, tiny_model.tokenizer, ROWS, RETAIN, [], cfg, 1, on_step=blow_up_after_2)
    assert res.stopped == "non-finite loss at step 3"
    assert res.steps == 1  # the weights after step 1: the last whose loss was finite
    for n, p in params.items():
        assert torch.equal(p, seen["good"][n]), n
    batch = collate(encode_rows(tiny_model.tokenizer, ROWS, 64), tiny_model.tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.isfinite(sequence_logps(pm, batch)[0]).all()


@pytest.mark.parametrize("mask", ["none", "disruption"])
def test_training_resumes_from_its_checkpoint_to_the_same_weights(tiny_model, tmp_path, mask):
    cfg = ReleaseConfig(
        rank=4, alpha=8, steps=6, batch_size=2, lr=1e-3, checkpoint_every=3, mask=mask
    )
    straight = attach_lora(fresh(tiny_model), cfg, seed=0)
    train_module(straight, tiny_model.tokenizer, ROWS, RETAIN, [], cfg, 1)
    # Interrupted run: stop after step 4 (checkpoint at 3), then resume from the file.
    state = tmp_path / "train-state"
    first = attach_lora(fresh(tiny_model), cfg, seed=0)

    class Killed(Exception):
        pass

    def kill_at_4(step, entry):
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        train_module(
            first,
            tiny_model.tokenizer,
            ROWS,
            RETAIN,
            [],
            cfg,
            1,
            state_path=state,
            on_step=kill_at_4,
        )
    again = attach_lora(fresh(tiny_model), cfg, seed=0)
    res = train_module(again, tiny_model.tokenizer, ROWS, RETAIN, [], cfg, 1, state_path=state)
    assert res.resumed_from == 3 and res.steps == 6
    for (n, p), q in zip(trainable(straight).items(), trainable(again).values(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n


def test_missing_target_module_names_the_linear_layers(tiny_model):
    cfg = ReleaseConfig(target_modules=("q_proj", "c_attn"))
    with pytest.raises(
        RRError, match="no module named c_attn: choose --target-modules from .*q_proj"
    ):
        attach_lora(fresh(tiny_model), cfg, seed=0)


def test_kl_retain_loss_is_zero_at_the_reference(tiny_model):
    cfg = ReleaseConfig(rank=4, alpha=8, retain_loss="kl")
    pm = attach_lora(fresh(tiny_model), cfg, seed=0)
    batch = collate(
        encode_rows(tiny_model.tokenizer, RETAIN, 64), tiny_model.tokenizer.pad_token_id
    )
    with torch.no_grad():
        kl = float(RETAIN_LOSSES.get("kl")()(pm, batch, cfg))
    assert kl == pytest.approx(0.0, abs=1e-6)


def test_answer_logprobs_equal_cross_entropy_bit_for_bit(tiny_model):
    # One log-prob function serves training, R2F and the evaluation's likelihoods; it must give
    # exactly what the training loss's cross-entropy gave, so released figures do not move.
    import torch.nn.functional as F

    batch = collate(encode_rows(tiny_model.tokenizer, ROWS, 64), tiny_model.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = tiny_model.model(input_ids=batch["input_ids"]).logits
    picked, mask = token_logps(logits, batch["labels"])
    labels = batch["labels"][:, 1:]
    nll = F.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
        ignore_index=IGNORE, reduction="none",
    ).view(labels.shape)  # fmt: skip
    assert torch.equal(picked[mask], -nll[mask])
    assert torch.equal(mask, labels != IGNORE)


def test_answer_logits_skip_the_prompt_and_keep_the_answer_logprobs(tiny_model):
    # The head is applied from the token before the batch's first answer token on: the same
    # per-sequence log-probs as full logits, fewer positions projected onto the vocabulary.
    from reveal_release.train.logprobs import answer_logits, sequence_logps_from_logits

    batch = collate(encode_rows(tiny_model.tokenizer, ROWS, 64), tiny_model.tokenizer.pad_token_id)
    with torch.no_grad():
        full = tiny_model.model(input_ids=batch["input_ids"]).logits
        logits, labels = answer_logits(tiny_model.model, batch)
    first = int((batch["labels"] != IGNORE).any(0).nonzero()[0])
    assert logits.shape[1] == full.shape[1] - (first - 1) < full.shape[1]
    want, n_want = sequence_logps_from_logits(full, batch["labels"])
    got, n_got = sequence_logps_from_logits(logits, labels)
    assert torch.equal(n_got, n_want)
    assert torch.allclose(got, want, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rank": 0}, "--rank must be between 1 and 256, got 0"),
        ({"lr": 0.0}, "--lr must be positive"),
        ({"stop_rate": 1.5}, "--stop-rate must be in [0, 1]"),
        ({"probe_limit": -1}, "--probes must be >= 0"),
        ({"target_modules": ()}, "--target-modules needs at least one value"),
        (
            {"loss": "nope"},
            "unknown forget loss 'nope': choose one of ga, generic, generic-dpo, generic-pref, "
            "npo, refusal",
        ),
        ({"update": "x"}, "unknown update rule 'x': choose one of lora, r2f"),
        ({"update": "r2f"}, "--update r2f needs --decoder PATH"),
    ],
)
def test_release_config_checks_every_option_where_it_is_declared(kwargs, message):
    with pytest.raises(RRError) as err:
        ReleaseConfig(**kwargs)
    assert message in str(err.value)


def test_relearning_goes_through_the_shared_loop_and_leaves_the_model_alone(tiny_model):
    from reveal_release.evaluate.attacks.relearn import relearn

    before = {n: p.detach().clone() for n, p in tiny_model.model.named_parameters()}
    work, history = relearn(tiny_model, ROWS, steps=6, lr=5e-3, seed=0)
    assert len(history) == 6 and history[-1]["nll"] < history[0]["nll"]
    assert work.model is not tiny_model.model
    for n, p in tiny_model.model.named_parameters():
        assert torch.equal(p, before[n]), n


def test_exploding_retain_loss_stops_with_the_weights_before(tiny_model):
    from reveal_release.train.config import OptimConfig
    from reveal_release.train.loop import run_steps

    pm = attach_lora(fresh(tiny_model), ReleaseConfig(rank=4, alpha=8), seed=0)
    values = iter([1.0, 1.5, 30.0, 1.0])

    def terms(step: int) -> dict:
        logp, n = sequence_logps(pm, collate(encode_rows(pm_tok, ROWS, 64), pad))
        retain = torch.tensor(next(values), requires_grad=True)
        return {"forget": -logp.sum() / n.sum(), "retain": retain}

    pm_tok, pad = tiny_model.tokenizer, tiny_model.tokenizer.pad_token_id
    res = run_steps(pm, terms, {"forget": 1.0, "retain": 1.0}, OptimConfig(steps=4))
    assert res.stopped == "retain loss exploded at step 3 (30.00, first 1.00)"
    assert res.steps == 1


def test_max_epochs_caps_a_rounds_steps_at_passes_over_its_forget_set():
    from reveal_release.release.config import ReleaseConfig

    assert ReleaseConfig(steps=16).steps_for(7) == 16  # no cap by default
    capped = ReleaseConfig(steps=16, batch_size=4, max_epochs=2)
    assert [capped.steps_for(n) for n in (30, 22, 7, 1, 0)] == [15, 11, 4, 1, 1]
    assert ReleaseConfig(steps=8, batch_size=4, max_epochs=2).steps_for(30) == 8


def test_a_bf16_model_trains_fp32_lora_factors(tiny_model):
    """What a CUDA run gets (bf16 weights): the LoRA factors (and so AdamW's moments) are fp32."""
    from reveal_release.train.loop import run_steps

    cfg = ReleaseConfig(rank=4, alpha=8, steps=2, batch_size=2, lr=1e-3)
    model = fresh(tiny_model).to(torch.bfloat16)
    peft = attach_lora(model, cfg, seed=0)
    params = trainable(peft)
    assert {p.dtype for p in params.values()} == {torch.float32}
    assert {p.dtype for n, p in peft.named_parameters() if not p.requires_grad} == {torch.bfloat16}
    before = {n: p.detach().clone() for n, p in params.items()}
    batch = collate(encode_rows(tiny_model.tokenizer, ROWS, 64), tiny_model.tokenizer.pad_token_id)

    def terms(step):
        logp, n = sequence_logps(peft, batch)
        return {"nll": -logp.sum() / n.sum()}

    result = run_steps(peft, terms, {"nll": 1.0}, cfg)
    assert result.steps == 2 and not result.stopped
    assert any(not torch.equal(p, before[n]) for n, p in params.items())


def test_gradient_checkpointing_recomputes_and_trains_to_the_same_weights(tiny_model):
    """--gradient-checkpointing: each layer runs again in the backward pass (counted), the
    weights after two steps are those of a run without it, and it is off again afterwards."""
    from reveal_release.train.loop import run_steps

    batch = collate(encode_rows(tiny_model.tokenizer, ROWS, 64), tiny_model.tokenizer.pad_token_id)
    out = {}
    for on in (False, True):
        cfg = ReleaseConfig(rank=4, alpha=8, steps=2, batch_size=2, lr=1e-2,
                            gradient_checkpointing=on)  # fmt: skip
        peft = attach_lora(fresh(tiny_model), cfg, seed=0)
        layer = peft.get_base_model().model.layers[0]
        calls, forward = [], layer.forward

        def counted(*a, calls=calls, forward=forward, **k):
            calls.append(1)
            return forward(*a, **k)

        layer.forward = counted

        def terms(step, peft=peft):
            logp, n = sequence_logps(peft, batch)
            return {"nll": -logp.sum() / n.sum()}

        run_steps(peft, terms, {"nll": 1.0}, cfg)
        assert len(calls) == (4 if on else 2)  # two steps; each forward again when recomputed
        assert not peft.get_base_model().is_gradient_checkpointing and not peft.training
        out[on] = {n: p.detach().clone() for n, p in trainable(peft).items()}
    for name, p in out[True].items():
        torch.testing.assert_close(p, out[False][name], rtol=1e-5, atol=1e-6, msg=name)
