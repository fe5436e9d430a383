"""`rr eval` end to end through the real command line: tiny-model runs and a hand-wired model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import copy_run, kill_when, popen_rr, run_rr, write_spec

from reveal_release.evaluate.settings import ALL_ATTACKS

FAST_EVAL = ["--probes", "3", "--qa", "4", "--max-new-tokens", "8", "--relearn-steps", "2"]


@pytest.fixture(scope="module")
def released(released_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's copy of the released run (its tests write reports into it)."""
    return copy_run(released_run, tmp_path_factory.mktemp("eval-released"))


def test_eval_of_a_released_run_writes_the_report_and_caches(released):
    out = run_rr("eval", "--run", str(released), *FAST_EVAL)
    assert out.returncode == 0, out.stderr
    report = released / "report"
    m = json.loads((report / "metrics.json").read_text())
    assert set(m["models"]) == {"base", "released"} and m["evaluated"] == "released"
    for model in m["models"].values():
        # Threshold 0: every answer counts as revealing, so every rate is exactly 1.
        assert model["heldout"]["n"] == 3 and model["heldout"]["rate"] == 1.0
        assert model["utility"]["qa_n"] == 4 and model["utility"]["perplexity"] > 1
        assert model["utility"]["qa_left_out"] == []  # no general question is about code
        # The random model's answers can be empty: then there is no NLL (None, never NaN).
        assert model["fluency"]["nll_under_base"] is None or model["fluency"]["nll_under_base"] > 0
    assert set(m["attacks"]) == set(ALL_ATTACKS)
    for name in ALL_ATTACKS:
        if name != "mia":
            assert m["attacks"][name]["released"]["reveal_rate"] == 1.0, name
            assert m["attacks"][name]["recovery"] is None, name  # nothing was removed
    for name in ("quant-int4", "quant-int4-g128", "quant-int4-sym", "quant-int8"):
        res = m["attacks"][name]["released"]
        assert 0 <= res["codes_changed"] <= 1 and 0 <= res["qa_accuracy"] <= 1, name
    assert set(m["provenance"]["on_grid"]) == {"int8", "int4", "int4-g128", "int4-sym"}
    assert m["provenance"]["on_grid"]["int4"] < 0.5  # a random model sits on no grid
    assert 0 <= m["attacks"]["mia"]["released"]["auc"] <= 1
    assert "reveal_rate" in m["attacks"]["rephrase"]["base"]  # the before figure
    ga = m["baseline_ga"]
    assert ga["steps"] == 4 and [p["step"] for p in ga["points"]] == [1, 2, 4]
    assert [r["round"] for r in m["rounds"]] == [0, 1]
    assert m["bandit"] and m["examples"]
    page = (report / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "rr eval: anything" in out.stdout and "report:" in out.stderr

    again = run_rr("eval", "--run", str(released), *FAST_EVAL)
    assert again.returncode == 0, again.stderr
    m2 = json.loads((report / "metrics.json").read_text())
    assert m2["cache"]["computed"] == 0 and m2["models"] == m["models"]
    assert "(0 figures computed" in again.stderr

    less = run_rr("eval", "--run", str(released), *FAST_EVAL, "--attacks", "none", "--no-baseline")
    assert less.returncode == 0, less.stderr
    m3 = json.loads((report / "metrics.json").read_text())
    assert all("turned off" in e["skipped"] for e in m3["attacks"].values())
    assert m3["cache"]["computed"] == 0  # the models' figures came from the cache


def test_eval_of_a_run_without_a_release_evaluates_the_base_and_says_so(revealed, tmp_path):
    out = run_rr(
        "eval", "--run", str(revealed), "--out", str(tmp_path / "r"), *FAST_EVAL,
        "--attacks", "rephrase,relearn",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "no released model" in out.stdout + out.stderr
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert list(m["models"]) == ["base"] and m["evaluated"] == "base"
    assert "no released model" in (tmp_path / "r" / "report.md").read_text()
    assert "needs a run with" in m["baseline_ga"]["skipped"]


def test_eval_of_a_lone_model_skips_attacks_that_cannot_run_with_a_reason(
    parrot_folder, tiny_folder, tmp_path
):
    out = run_rr(
        "eval", "--model", str(parrot_folder), "--target", "code", "--out", str(tmp_path / "r"),
        "--probes", "4", "--qa", "4", "--max-new-tokens", "16",
        "--attacks", "relearn,mia,quant-int8", "--base", str(tiny_folder),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["models"]["released"]["heldout"]["rate"] == 1.0  # it always answers with code
    assert m["attacks"]["quant-int8"]["released"]["reveal_rate"] == 1.0
    # The parrot's code costs the random base about ln(vocabulary) nats per token.
    assert m["models"]["released"]["fluency"]["nll_under_base"] > 5
    assert "no forget samples" in m["attacks"]["relearn"]["skipped"]
    assert "no forget samples" in m["attacks"]["mia"]["skipped"]
    assert "NaN" not in (tmp_path / "r" / "metrics.json").read_text()
    md = (tmp_path / "r" / "report.md").read_text()
    assert "no forget samples" in md and "turned off (--attacks)" in md
    assert "attack relearn skipped: no forget samples" in out.stdout + out.stderr


def test_eval_bad_input_is_one_clear_line(tiny_folder, tmp_path):
    cases = [
        (["eval"], "pass either --run DIR or --model M --target T"),
        (["eval", "--run", "a", "--model", "b"], "pass either --run DIR or --model"),
        (["eval", "--model", str(tiny_folder)], "--model needs --target"),
        (["eval", "--run", str(tmp_path / "none")], "not a run folder"),
        (["eval", "--model", str(tiny_folder), "--target", "code", "--attacks", "x"],
         "unknown attack 'x'"),
        (["eval", "--model", str(tiny_folder), "--target", str(write_spec(tmp_path, heldout=False)),
          "--out", str(tmp_path / "o")], "has no held-out probes"),
    ]  # fmt: skip
    for args, msg in cases:
        out = run_rr(*args)
        assert out.returncode == 2, (args, out.stderr)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and msg in lines[0], (args, out.stderr)
    assert not (tmp_path / "o").exists()  # nothing written for a target without probes


def test_eval_killed_midway_resumes_from_its_cache(released, tmp_path):
    out_dir = tmp_path / "r"
    args = ["eval", "--run", str(released), "--out", str(out_dir), *FAST_EVAL, "--no-baseline"]
    cache = out_dir / "cache.json"

    def two_figures() -> bool:
        try:
            return len(json.loads(cache.read_text())) >= 2
        except (OSError, ValueError):
            return False

    kill_when(popen_rr(*args), two_figures)
    kept = len(json.loads(cache.read_text()))
    assert kept >= 2 and not (out_dir / "metrics.json").exists()
    again = run_rr(*args)
    assert again.returncode == 0, again.stderr
    m = json.loads((out_dir / "metrics.json").read_text())
    assert m["cache"]["hits"] >= kept and m["cache"]["computed"] > 0
