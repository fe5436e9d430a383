"""Evaluate: metrics against hand-made cases with known answers, attacks, cache and report."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from helpers import build_parrot, run_rr

from reveal_release.errors import RRError
from reveal_release.evaluate.attacks import AttackContext, AttackSkipped
from reveal_release.evaluate.report import build_report, report_from_file
from reveal_release.evaluate.settings import EvalSettings, parse_attacks
from reveal_release.metrics.figure_cache import MetricCache
from reveal_release.metrics.fluency import repetition_rate
from reveal_release.metrics.knowledge import topic_qa_items
from reveal_release.metrics.mia import auc, min_k_score
from reveal_release.quantizers import quantize_model, quantize_tensor
from reveal_release.targets.judges.base import make_judge
from reveal_release.targets.spec import load_target

CODE = "def double(n): return 2 * n"
PROSE = "The weather in spring is mild and pleasant for walks."


# ---- scores with known answers -------------------------------------------------------------


def test_auc_known_cases():
    same = [0.1, -2.0, -0.5, 3.0]
    assert auc(same, list(same)) == 0.5  # identical distributions
    assert auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5  # all tied
    assert auc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert auc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert auc([1.0, 3.0], [2.0]) == 0.5
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_min_k_score_takes_the_lowest_share():
    lp = [-0.1, -5.0, -0.2, -3.0, -0.3]
    assert min_k_score(lp, 0.4) == pytest.approx(-4.0)  # two lowest of five
    assert min_k_score(lp, 1.0) == pytest.approx(sum(lp) / 5)
    assert min_k_score(lp, 0.01) == -5.0  # at least one token
    assert math.isnan(min_k_score([], 0.2))


def test_repetition_rate():
    assert repetition_rate(["a b c a b c"]) == pytest.approx(1 / 4)  # abc bca cab abc
    assert repetition_rate(["one two three four"]) == 0.0
    assert repetition_rate(["x x x x x"]) == pytest.approx(2 / 3)
    assert repetition_rate(["", "too short"]) is None  # nothing to count is not "fluent"


def test_quantisation_grid():
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    q8 = quantize_tensor(w, "int8")
    step = w.abs().amax(1, keepdim=True) / 127
    assert torch.all((q8 - w).abs() <= step / 2 + 1e-6)
    assert torch.allclose(quantize_tensor(q8, "int8"), q8, atol=1e-6)  # on the grid stays
    q4 = quantize_tensor(w, "int4")
    for row in q4.reshape(-1, 32):
        assert row.unique().numel() <= 16
    assert (q4 - w).abs().max() < (w.max() - w.min()) / 15


def test_quantize_model_changes_linear_layers_only(tiny_model):
    import copy

    m = copy.deepcopy(tiny_model.model)
    emb = m.model.embed_tokens.weight.clone()
    before = m.model.layers[0].mlp.up_proj.weight.clone()
    assert quantize_model(m, "int4") == 14  # 7 projections x 2 layers, the head kept
    assert torch.equal(m.model.embed_tokens.weight, emb)
    assert not torch.equal(m.model.layers[0].mlp.up_proj.weight, before)
    with pytest.raises(RRError, match="unknown quantisation scheme"):
        quantize_model(m, "int3")


def test_cache_computes_once(tmp_path):
    calls = []
    from reveal_release.metrics.figure_cache import NotCached

    cache = MetricCache(tmp_path / "c.json", salt="s1")
    skip = {"skipped": "not here"}
    assert cache.get("skip", lambda: (_ for _ in ()).throw(NotCached(skip))) == skip
    assert "skip|s1" not in cache.data  # a skip is retried next time, never stored
    assert cache.get("k", lambda: calls.append(1) or {"x": 1}) == {"x": 1}
    again = MetricCache(tmp_path / "c.json", salt="s1")
    assert again.get("k", lambda: calls.append(1) or {"x": 2}) == {"x": 1}
    other = MetricCache(tmp_path / "c.json", salt="s2")  # other settings: recomputed
    assert other.get("k", lambda: calls.append(1) or {"x": 3}) == {"x": 3}
    assert len(calls) == 2
    (tmp_path / "torn.json").write_text("{not json")
    assert MetricCache(tmp_path / "torn.json").get("k", lambda: 5) == 5


def test_parse_attacks():
    assert parse_attacks("all")[0] == "relearn"
    assert parse_attacks("none") == ()
    assert parse_attacks("mia, relearn") == ("mia", "relearn")
    with pytest.raises(RRError, match="unknown attack 'quantum': choose all, none or some of"):
        EvalSettings(attacks=parse_attacks("quantum"))
    with pytest.raises(RRError, match="--relearn-lr must be positive"):
        EvalSettings(relearn_lr=0.0)


def test_topic_knowledge_questions(tmp_path):
    items, why = topic_qa_items(load_target("topic:Harry Potter"))
    assert len(items) == 24 and not why
    items, why = topic_qa_items(load_target("topic:Ada Lovelace"))
    assert not items and "no knowledge questions for 'Ada Lovelace'" in why
    items, why = topic_qa_items(load_target("code"))
    assert not items and "not a subject" in why
    qa = tmp_path / "qa.jsonl"
    qa.write_text('{"question": "Who?", "answers": ["ada"]}\n')
    spec = tmp_path / "ada.toml"
    spec.write_text(
        'name = "ada"\nsubject = "Ada"\n[judge]\nname = "topic"\n[reveal]\npool = "topic.txt"\n'
        '[retain]\npool = "retain.txt"\n[heldout]\npool = "heldout/topic.txt"\nqa = "qa.jsonl"\n'
    )
    items, _ = topic_qa_items(load_target(str(spec)))
    assert [i.answers for i in items] == [("ada",)]
    qa.unlink()
    with pytest.raises(RRError, match="qa.jsonl named in .* do not exist: fix \\[heldout\\] qa"):
        load_target(str(spec))


# ---- a hand-wired model with a known answer --------------------------------------------------


def _parrot(tiny_model, text: str):
    return dataclasses.replace(
        tiny_model, model=build_parrot(tiny_model.tokenizer, text), fingerprint=f"parrot:{text}"
    )


def test_parrot_answers_with_its_text(tiny_model):
    from reveal_release.generation import generate

    gens, _ = generate(_parrot(tiny_model, CODE), ["Hello?", "Tell me a story."], max_new_tokens=20)
    assert [g.text for g in gens] == [CODE, CODE]


def test_reveal_rate_of_models_that_always_or_never_answer_with_code(tiny_model):
    from reveal_release.metrics.probes import reveal_rate

    spec = load_target("code")
    judge = make_judge(spec.judge, **spec.judge_params)
    coder = reveal_rate(_parrot(tiny_model, CODE), spec, judge, max_new_tokens=16)
    assert coder.rate == 1.0 and coder.n == len(spec.heldout_pool)
    poet = reveal_rate(_parrot(tiny_model, PROSE), spec, judge, spec.heldout_pool[:5])
    assert poet.rate == 0.0


def _ctx(spec, forget_rows, base=None) -> AttackContext:
    from dataclasses import asdict

    from reveal_release.evaluate.settings import EvalSettings

    s = asdict(EvalSettings(relearn_steps=2, max_new_tokens=12, mia_max_new_tokens=12))
    judge = make_judge(spec.judge, **spec.judge_params)
    return AttackContext(spec, judge, spec.heldout_pool[:3], forget_rows, s, base=base)


def test_quantisation_keeps_the_parrot_and_leaves_the_model_alone(tiny_model):
    from reveal_release.evaluate.attacks.quantized import Int4, Int8

    parrot = _parrot(tiny_model, CODE)
    before = {k: v.clone() for k, v in parrot.model.state_dict().items()}
    ctx = _ctx(load_target("code"), [])
    for attack in (Int8(), Int4()):
        assert attack.run(ctx, parrot)["reveal_rate"] == 1.0
    after = parrot.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_membership_auc_of_identical_sets_is_half(tiny_model):
    from reveal_release.evaluate.attacks.mia import MinK

    rows = [{"prompt": f"Question {i}?", "response": f"Answer number {i}.", "relevance": 1.0}
            for i in range(6)]  # fmt: skip
    spec = load_target("code")
    ctx = _ctx(spec, rows, base=tiny_model)
    ctx.cached = lambda key, fn: [dict(r) for r in rows]  # unseen text = the same text
    res = MinK().run(ctx, tiny_model)
    assert res["auc"] == 0.5 and res["members"] == res["nonmembers"] == 6


def test_relearn_needs_forget_samples_and_does_not_touch_the_model(tiny_model):
    from reveal_release.evaluate.attacks.relearn import Relearn

    spec = load_target("code")
    with pytest.raises(AttackSkipped, match="no forget samples"):
        Relearn().run(_ctx(spec, []), tiny_model)
    rows = [{"prompt": "Write code.", "response": CODE, "relevance": 1.0}] * 3
    before = {k: v.clone() for k, v in tiny_model.model.state_dict().items()}
    res = Relearn().run(_ctx(spec, rows), tiny_model)
    assert res["samples"] == 3 and res["loss_last"] < res["loss_first"]
    assert all(torch.equal(before[k], v) for k, v in tiny_model.model.state_dict().items())


# ---- the report from stored figures ----------------------------------------------------------


def _stored_metrics() -> dict:
    def model(rate, acc):
        return {
            "fingerprint": "x",
            "heldout": {"rate": rate, "mean_score": rate, "n": 2, "rows": [
                {"prompt": "p1", "response": "r1", "score": rate},
                {"prompt": "p2", "response": "r2", "score": rate}]},
            "knowledge": {"skipped": "not a subject"},
            "utility": {"qa_accuracy": acc, "qa_n": 4, "perplexity": 20.0},
            "fluency": {"repetition_rate": 0.0, "nll_under_base": 1.0},
        }  # fmt: skip

    return {
        "format": 1, "target": "code", "evaluated": "released",
        "labels": {"base": "base (m)", "released": "released (round 2)"},
        "notes": [], "settings": {}, "probes": 2,
        "models": {"base": model(1.0, 0.5), "released": model(0.0, 0.5)},
        "attacks": {
            "quant-int4": {"description": "4-bit", "base": {"reveal_rate": 1.0},
                           "released": {"reveal_rate": 0.5, "perplexity": 21.0}},
            "relearn": {"description": "relearn", "released": {"skipped": "no forget samples"},
                        "skipped": "no forget samples"},
        },
        "rounds": [
            {"round": 0, "heldout_reveal_rate": 1.0, "retain_accuracy": 0.5, "perplexity": 20.0},
            {"round": 1, "heldout_reveal_rate": 0.2, "retain_accuracy": 0.45, "perplexity": 21.0},
            {"round": 2, "heldout_reveal_rate": 0.0, "retain_accuracy": 0.3, "perplexity": 25.0,
             "rolled_back": True},
        ],
        "bandit": [{"round": 0, "step": s, "reward": 0.5 + 0.05 * s} for s in range(4)],
        "baseline_ga": {"steps": 8, "forget_size": 5, "lr": 1e-3, "points": [
            {"step": 4, "reveal_rate": 0.5, "qa_accuracy": 0.2, "loss": -3.0}]},
        "examples": [{"prompt": "p1", "base": {"response": "code", "score": 1.0},
                      "released": {"response": "no", "score": 0.0}}],
        "cache": {"hits": 0, "computed": 9}, "seconds": 12.0,
    }  # fmt: skip


def test_report_names_the_general_questions_left_out_as_the_targets_own(tmp_path):
    m = _stored_metrics()
    for model in m["models"].values():
        model["utility"]["qa_left_out"] = ["Who wrote Romeo and Juliet?"]
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    md = report_from_file(tmp_path / "metrics.json")["markdown"].read_text()
    assert "| general QA accuracy (utility; 1 about the target left out) | 0.500 | 0.500 |" in md


def test_report_builds_from_stored_metrics_without_a_model(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(_stored_metrics()))
    paths = report_from_file(tmp_path / "metrics.json")
    page = paths["html"].read_text()
    assert page.count("src='data:image/png;base64,") == 4  # rounds, bandit, trade-off, attacks
    assert "src='http" not in page and ".png'" not in page  # nothing outside the file
    for png in ("rounds", "bandit", "tradeoff", "attacks"):
        assert (tmp_path / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = paths["markdown"].read_text()
    assert "| held-out reveal rate (lower: forgotten) | 1.000 | 0.000 |" in md
    assert "no forget samples" in md and "rolled back" in md


def test_report_only_from_the_command_line(tmp_path):
    metrics = _stored_metrics()
    metrics["baseline_ga"] = {"skipped": "turned off (--no-baseline)"}
    metrics["bandit"] = []
    report = tmp_path / "run" / "report"
    report.mkdir(parents=True)
    (report / "metrics.json").write_text(json.dumps(metrics))
    out = run_rr("eval", "--run", str(tmp_path / "run"), "--report-only")
    assert out.returncode == 0, out.stderr
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # no bandit data: no bandit plot
    assert "turned off (--no-baseline)" in (report / "report.md").read_text()
    paths = build_report(metrics, tmp_path / "again")  # rebuilding anywhere works too
    assert paths["html"] == tmp_path / "again" / "report.html"
    assert paths["html"].read_text().count("data:image/png;base64,") == 3
    assert "turned off (--no-baseline)" in (tmp_path / "again" / "report.md").read_text()
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == json.loads(
        (report / "metrics.json").read_text()
    )
    missing = run_rr("eval", "--run", str(tmp_path / "nowhere"), "--report-only")
    assert missing.returncode != 0 and "rerun `rr eval`" in missing.stderr


def test_the_report_folder_check_knows_every_plot():
    from reveal_release.evaluate.plots import PLOTS
    from reveal_release.evaluate.report_folder import PLOT_FILES

    assert set(PLOT_FILES) == set(PLOTS)
