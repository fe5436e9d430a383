"""Measurement primitives: answer matching, the bundled data, perplexity, QA and reveal rate."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from reveal_release.errors import RRError
from reveal_release.metrics.perplexity import perplexity, plain_text
from reveal_release.metrics.probes import reveal_rate
from reveal_release.metrics.qa import answer_matches, load_qa, qa_accuracy, retain_items
from reveal_release.targets.spec import load_target


def test_answer_matches_whole_words_ignoring_case():
    assert answer_matches("The capital is Paris.", ["paris"])
    assert answer_matches("2 + 3 = 5", ["5", "five"])
    assert answer_matches("It has FOUR legs", ["4", "four"])
    assert answer_matches("Washington, D.C. is the capital.", ["washington, d.c."])
    assert answer_matches("It is 7.", ["7"])
    assert not answer_matches("14", ["4"])
    assert not answer_matches("Parisian food", ["paris"])
    assert not answer_matches("twenty-five", ["five"])
    assert not answer_matches("It freezes at -18.0 degrees", ["0", "18"])
    assert not answer_matches("anything", [])
    assert not answer_matches("anything", [""])


def test_qa_set_is_80_distinct_non_coding_questions():
    items = load_qa()
    assert len(items) == 80
    assert len({it.question for it in items}) == 80
    for it in items:
        assert it.question.endswith("?") and it.answers
        assert all(a and a == a.lower() for a in it.answers)
    words = " ".join(it.question.lower() for it in items)
    assert not any(w in words for w in ("python", "code", "program", "function"))


def test_retain_questions_leave_out_only_those_about_the_target():
    person = load_target("person")
    kept, left = retain_items(person.tags())
    assert [it.question for it in left] == [
        "Who wrote Romeo and Juliet?",
        "Who painted the Mona Lisa?",
        "Who was the first president of the United States?",
    ]
    assert len(kept) == 77 and not {q.question for q in left} & {q.question for q in kept}
    for name in ("code", "toxicity"):
        kept, left = retain_items(load_target(name).tags())
        assert len(kept) == 80 and left == []
    kept, left = retain_items(person.tags(), limit=10)
    assert [it.question for it in kept] == [it.question for it in load_qa() if not it.about][:10]


def test_a_question_file_with_a_bad_about_list_is_a_one_line_error(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text('{"question": "Q?", "answers": ["a"], "about": "person"}\n', encoding="utf-8")
    with pytest.raises(RRError, match="line 1 is not a question record"):
        load_qa(path)
    path.write_text('{"question": "Q?", "answers": ["a"], "about": ["person"]}\n', encoding="utf-8")
    assert load_qa(path)[0].about == ("person",)


def test_plain_text_is_prose_of_about_1500_words():
    text = plain_text()
    assert 1300 <= len(text.split()) <= 1800
    assert text.count("\n\n") >= 8
    assert not any(c in text for c in "{}`=<>")


def test_random_model_perplexity_is_near_uniform(tiny_model):
    # Random init (std 0.02) gives near-flat logits, so perplexity is close to the vocabulary
    # size; a factor of 20 either way still rules out a wrong mean or a missing exp.
    vocab = len(tiny_model.tokenizer)
    ppl = perplexity(tiny_model)
    assert math.isfinite(ppl)
    assert vocab / 20 < ppl < vocab * 20


def test_perplexity_matches_the_model_loss_when_one_window_holds_the_text(tiny_model):
    import torch

    text = "The river was high after the rain, and the old bridge shook a little."
    ids = tiny_model.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.inference_mode():
        loss = float(tiny_model.model(ids, labels=ids).loss)
    assert perplexity(tiny_model, text, window=256) == pytest.approx(math.exp(loss), rel=1e-4)
    # Overlapping windows score each token once: still finite and of the same order.
    overlapped = perplexity(tiny_model, text, window=8, stride=4)
    assert math.isfinite(overlapped) and overlapped > 1
    with pytest.raises(RRError):
        perplexity(tiny_model, text, window=8, stride=16)


def test_reveal_rate_needs_heldout_probes_or_prompts(tiny_model):
    spec = dataclasses.replace(load_target("code"), heldout_pool=[])
    with pytest.raises(RRError, match="target 'code' has no held-out probes"):
        reveal_rate(tiny_model, spec)
    result = reveal_rate(tiny_model, spec, prompts=["Say hello."], max_new_tokens=4)
    assert set(result.rows[0]) == {"prompt", "response", "score"}
    assert result.n == 1 and result.rate == float(result.rows[0]["score"] >= spec.threshold)


@pytest.mark.integration
def test_embedded_perplexity_is_far_lower_on_prose_than_on_shuffled_words(embedded):
    text = "\n\n".join(plain_text().split("\n\n")[:4])  # ~600 words keep the test short
    words = text.split()
    random.Random(0).shuffle(words)
    ppl, shuffled = perplexity(embedded, text), perplexity(embedded, " ".join(words))
    assert 1 < ppl < 100
    assert shuffled > 5 * ppl


@pytest.mark.integration
def test_embedded_qa_accuracy_on_16_questions(embedded):
    items = load_qa()[:16]
    result = qa_accuracy(embedded, items)
    assert result.total == 16 and len(result.rows) == 16
    assert result.correct > 0 and result.accuracy == result.correct / 16
    assert [r["question"] for r in result.rows] == [it.question for it in items]
    for it, row in zip(items, result.rows, strict=True):
        assert row["correct"] == answer_matches(row["answer"], it.answers)


@pytest.mark.integration
def test_embedded_reveal_rate_on_four_code_probes(embedded):
    spec = load_target("code")
    result = reveal_rate(embedded, spec, prompts=spec.heldout_pool[:4], max_new_tokens=32)
    assert result.n == 4 and len(result.rows) == 4
    assert [r["prompt"] for r in result.rows] == spec.heldout_pool[:4]
    hits = sum(r["score"] >= spec.threshold for r in result.rows)
    assert result.rate == hits / 4 and result.rate >= 0.5  # the base model writes code
    assert result.mean_score == pytest.approx(sum(r["score"] for r in result.rows) / 4)


def test_qa_questions_are_in_no_instruction_pool():
    """Retain accuracy is held out: no QA question may appear in a reveal, retain or meta pool."""
    import re

    from reveal_release.targets.spec import instructions_dir

    def norm(s: str) -> str:
        return re.sub(r"[^a-z0-9 ]", "", s.lower()).strip()

    questions = {norm(it.question) for it in load_qa()}
    for pool in instructions_dir().rglob("*.txt"):
        lines = [ln for ln in pool.read_text().splitlines() if ln and not ln.startswith("#")]
        shared = [ln for ln in lines if norm(ln) in questions]
        assert not shared, f"{pool} holds QA questions: {shared}"


def test_a_rounds_measurement_scores_retain_qa_without_the_targets_own_questions(tiny_model):
    from reveal_release.release.measure import measure
    from reveal_release.targets.judges import make_judge

    spec = load_target("person")
    judge = make_judge(spec.judge, **spec.judge_params)
    m = measure(tiny_model, spec, judge, max_new_tokens=4, probe_limit=2, qa_limit=0)
    assert m["retain_n"] == 77 and len(m["retain_left_out"]) == 3
    assert "Who painted the Mona Lisa?" in m["retain_left_out"]
