"""Focused forgetting: the forget loss on the tokens the judge marks as the target (the person
judge's names), on a tiny random Llama and spaCy's small English model."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from reveal_release.errors import RRError
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.rounds import Rounds
from reveal_release.targets.judges import make_judge
from reveal_release.train.data import IGNORE, encode_rows, focused
from reveal_release.train.logprobs import sequence_logps_from_logits
from reveal_release.train.lora import attach_lora
from reveal_release.train.losses import FORGET_LOSSES
from reveal_release.train.losses.npo import npo_loss
from reveal_release.train.objective import UnlearnObjective

TEXT = "  Isaac Newton met Albert Einstein in a dream."
NAMES = [(2, 14), (19, 34)]  # "Isaac Newton", "Albert Einstein" in TEXT
ROWS = [
    {"prompt": "Tell me about two physicists.", "response": TEXT, "focus": NAMES},
    {"prompt": "Who painted it?", "response": "Leonardo painted it.", "focus": [(0, 8)]},
    {"prompt": "Say something.", "response": "Nothing to name here.", "focus": []},
]


@pytest.fixture(scope="module")
def person():
    return make_judge("person")


def _decode(tok, labels):
    return tok.decode([t for t in labels if t != IGNORE])


def test_focus_labels_are_the_name_tokens_and_the_labels_stay_whole(tiny_model):
    tok = tiny_model.tokenizer
    assert [TEXT[a:b] for a, b in NAMES] == ["Isaac Newton", "Albert Einstein"]
    ex = encode_rows(tok, ROWS[:1], 128)[0]
    plain = encode_rows(tok, [{k: v for k, v in ROWS[0].items() if k != "focus"}], 128)[0]
    assert ex.labels == plain.labels and plain.focus is None
    names = _decode(tok, ex.focus)
    assert "Newton" in names and "Einstein" in names
    assert "met" not in names and "dream" not in names
    assert 0 < ex.focus_tokens < sum(t != IGNORE for t in ex.labels)


def test_a_replaced_response_drops_the_focus(tiny_model):
    refusal = FORGET_LOSSES.get("refusal")().training_rows(ROWS[:1])
    ex = encode_rows(tiny_model.tokenizer, refusal, 128)[0]
    assert ex.focus is None
    assert encode_rows(tiny_model.tokenizer, ROWS[:1], 128, response="No.")[0].focus is None


def test_answers_with_nothing_marked_leave_the_forget_set(tiny_model):
    examples = encode_rows(tiny_model.tokenizer, ROWS, 128)
    assert [e.focus_tokens > 0 for e in focused(examples)] == [True, True]
    unfocused = encode_rows(tiny_model.tokenizer, [{**r, "focus": None} for r in ROWS], 128)
    assert len(focused(unfocused)) == 3


def test_the_focused_forget_term_is_npo_over_the_name_tokens(tiny_model):
    cfg = ReleaseConfig(rank=4, alpha=8, batch_size=2, beta=0.5)
    peft = attach_lora(copy.deepcopy(tiny_model.model), cfg, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B != 0, so the trained model differs from its reference
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    objective = UnlearnObjective(peft, tiny_model.tokenizer, ROWS, [], cfg, cfg, (3, 4))
    assert len(objective.forget) == 2  # the third answer names nobody
    idx, batch = objective._batch(objective.forget, 3, 0)
    got = objective.terms(0)["forget"].detach()

    def logps(labels_key):
        logits = peft(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return sequence_logps_from_logits(logits, batch[labels_key])[0]

    with torch.no_grad():
        mine = logps("focus_labels")
        with peft.disable_adapter():
            ref = logps("focus_labels")
        whole = npo_loss(logps("labels"), ref, 0.5)
    assert float(got) == pytest.approx(float(npo_loss(mine, ref, 0.5)), rel=1e-5)
    assert float(got) != pytest.approx(float(whole), rel=1e-3)


def test_person_spans_are_the_names_the_score_counts(person):
    texts = [
        "Dear [Your Name], Isaac Newton met Albert Einstein.\nThen [X] saw Marie Curie.",
        "A recipe: mix flour and water.",
    ]
    spans = person.spans(texts)
    names = [texts[0][a:b] for a, b in spans[0]]
    assert names == ["Isaac Newton", "Albert Einstein", "Marie Curie"]
    assert spans[1] == []
    assert make_judge("code").spans(texts) is None


def test_the_release_focuses_only_where_the_judge_marks_names(person):
    rows = [{k: v for k, v in r.items() if k != "focus"} for r in ROWS]
    state = SimpleNamespace(cfg=ReleaseConfig(focus="auto"), judge=person, focus_spans=None)
    out = Rounds.focused(state, rows)
    assert [r["response"][a:b] for r in out for a, b in r["focus"]] == [
        "Isaac Newton",
        "Albert Einstein",
        "Leonardo",
    ]
    assert state.focus_spans == 3
    off = SimpleNamespace(cfg=ReleaseConfig(), judge=person, focus_spans=None)
    assert Rounds.focused(off, rows) == rows and off.focus_spans is None
    generic = SimpleNamespace(cfg=ReleaseConfig(loss="generic"), judge=person, focus_spans=None)
    assert [len(r["focus"]) for r in Rounds.focused(generic, rows)] == [2, 1, 0]
    code = SimpleNamespace(cfg=ReleaseConfig(focus="auto"), judge=make_judge("code"))
    assert Rounds.focused(code, rows) == rows


def test_a_bad_focus_is_a_one_line_error():
    with pytest.raises(RRError, match="--focus takes auto or none, not 'names'"):
        ReleaseConfig(focus="names")


def test_generic_replacement_trains_on_the_answers_without_the_names(tiny_model):
    from reveal_release.train.losses.generic import replace_spans

    text = replace_spans(TEXT, NAMES[::-1])
    assert text == "  someone met someone in a dream."
    rows = FORGET_LOSSES.get("generic")().training_rows(ROWS)
    assert [r["response"] for r in rows] == [text, "someone painted it."]
    ex = encode_rows(tiny_model.tokenizer, rows, 128)[0]
    assert ex.focus is None and "Newton" not in _decode(tiny_model.tokenizer, ex.labels)
    assert "met" in _decode(tiny_model.tokenizer, ex.labels)
    with pytest.raises(RRError, match="--loss generic needs a judge that marks the target"):
        FORGET_LOSSES.get("generic")().training_rows([{**ROWS[0], "focus": None}])


def test_the_generic_loss_on_a_judge_that_marks_nothing_is_a_one_line_error(revealed, tmp_path):
    from helpers import copy_run, run_rr

    run = copy_run(revealed, tmp_path)
    before = sorted(p.name for p in run.iterdir())
    res = run_rr("release", "--run", str(run), "--loss", "generic", "--rounds", "1")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "rr: error: --loss generic needs a judge that marks the target in answers (person); "
        "the 'code' judge cannot: use --loss npo"
    )
    assert sorted(p.name for p in run.iterdir()) == before


def test_generic_dpo_pairs_each_answer_with_its_generic_rewrite(tiny_model):
    loss = FORGET_LOSSES.get("generic-dpo")()
    rejected, chosen = loss.training_rows(ROWS), loss.chosen_rows(ROWS)
    assert [r["response"] for r in rejected] == [TEXT, "Leonardo painted it."]
    assert [r["response"] for r in chosen] == [
        "  someone met someone in a dream.",
        "someone painted it.",
    ]
    assert all(r["focus"] is None for r in rejected + chosen)
    with pytest.raises(RRError, match="--loss generic-dpo needs a judge that marks the target"):
        loss.training_rows([{**ROWS[0], "focus": None}])


def test_the_dpo_loss_is_the_margin_of_the_generic_answer_over_the_original():
    from reveal_release.train.losses.generic_dpo import dpo_loss

    zero = torch.zeros(3)
    assert float(dpo_loss(zero, zero, zero, zero, 0.1)) == pytest.approx(20 * 0.693147, rel=1e-5)
    rejected = torch.tensor([-5.0, -2.0], requires_grad=True)
    chosen = torch.tensor([-4.0, -9.0], requires_grad=True)
    ref_r, ref_c = torch.tensor([-3.0, -3.0]), torch.tensor([-6.0, -6.0])
    got = dpo_loss(rejected, chosen, ref_r, ref_c, 0.5)
    margins = torch.tensor([(-4 + 6) - (-5 + 3), (-9 + 6) - (-2 + 3)])  # 4, -4
    hand = (2 / 0.5) * torch.log1p(torch.exp(-0.5 * margins)).mean()
    assert float(got.detach()) == pytest.approx(float(hand), rel=1e-6)
    got.backward()
    assert (rejected.grad > 0).all() and (
        chosen.grad < 0
    ).all()  # descent: rejected down, chosen up
    assert abs(float(chosen.grad[1])) > abs(float(chosen.grad[0]))  # the lost margin pulls harder


def test_the_generic_dpo_term_scores_each_answer_against_its_own_rewrite(tiny_model):
    from reveal_release.train.data import collate
    from reveal_release.train.losses.generic_dpo import dpo_loss

    cfg = ReleaseConfig(rank=4, alpha=8, batch_size=2, beta=0.5, loss="generic-dpo")
    peft = attach_lora(copy.deepcopy(tiny_model.model), cfg, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    objective = UnlearnObjective(peft, tiny_model.tokenizer, ROWS, [], cfg, cfg, (3, 4))
    assert len(objective.forget) == len(objective.chosen) == 2
    idx, batch = objective._batch(objective.forget, 3, 0)
    tok = tiny_model.tokenizer
    alt = collate([objective.chosen[i] for i in idx], tok.pad_token_id)
    for i in range(len(idx)):
        assert "someone" in _decode(tok, alt["labels"][i].tolist())
        assert "someone" not in _decode(tok, batch["labels"][i].tolist())
    got = objective.terms(0)["forget"].detach()

    def logps(b):
        logits = peft(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        return sequence_logps_from_logits(logits, b["labels"])[0]

    with torch.no_grad():
        mine = logps(batch), logps(alt)
        with peft.disable_adapter():
            ref = logps(batch), logps(alt)
    hand = dpo_loss(mine[0], mine[1], ref[0], ref[1], 0.5)
    swapped = dpo_loss(mine[0], mine[1].flip(0), ref[0], ref[1].flip(0), 0.5)
    assert float(got) == pytest.approx(float(hand), rel=1e-5)
    assert float(got) != pytest.approx(float(swapped), rel=1e-3)
