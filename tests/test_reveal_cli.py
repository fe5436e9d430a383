"""`rr reveal` end to end through the real command line (tiny model and embedded model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import kill_when, popen_rr, run_rr, stage_status, write_spec

from reveal_release.atomic import read_jsonl

FIELDS = {"instruction", "prompt", "response", "relevance", "round"}


def test_nothing_relevant_is_an_error_not_an_empty_set(tiny_folder: Path, tmp_path: Path):
    run = tmp_path / "run"
    out = run_rr(
        "reveal",
        "--model",
        str(tiny_folder),
        "--target",
        "code",
        "--run",
        str(run),
        "--budget",
        "12",
    )
    assert out.returncode == 2
    assert "revealed nothing relevant to 'code' in 12 samples" in out.stderr
    assert not (run / "reveal" / "forget.jsonl").exists()
    assert (run / "reveal" / "bandit.jsonl").exists()  # kept for a look at what happened
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["stages"]["reveal"]["status"] == "failed"


def test_run_folder_holding_another_run(tiny_folder: Path, tmp_path: Path):
    run = tmp_path / "run"
    same = ["--model", str(tiny_folder), "--run", str(run), "--budget", "6", "--retain-budget", "3"]
    spec = str(write_spec(tmp_path))
    first = run_rr("reveal", *same, "--target", spec)
    assert first.returncode == 0, first.stderr
    other = run_rr("reveal", "--model", str(tiny_folder), "--target", "person", "--run", str(run))
    assert other.returncode == 2
    assert "already holds a different run" in other.stderr
    again = run_rr("reveal", *same, "--target", spec)
    assert again.returncode == 0 and "nothing to do" in again.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "nonsense"], "unknown target 'nonsense'"),
        (["--target", "code", "--backend", "tpu"], "unknown backend 'tpu'"),
        (["--target", "code", "--strategy", "greedy"], "unknown strategy 'greedy'"),
    ],
)
def test_bad_options_fail_before_any_work(tmp_path: Path, args, message):
    out = run_rr("reveal", "--run", str(tmp_path / "r"), *args)
    assert out.returncode == 2 and message in out.stderr
    assert not (tmp_path / "r").exists()


def test_killed_reveal_resumes_to_the_same_sets(tiny_folder: Path, tmp_path: Path):
    spec = write_spec(tmp_path)
    args = [
        "--model",
        str(tiny_folder),
        "--target",
        str(spec),
        "--budget",
        "36",
        "--retain-budget",
        "12",
    ]
    whole = tmp_path / "whole"
    assert run_rr("reveal", *args, "--run", str(whole)).returncode == 0

    killed = tmp_path / "killed"
    ckpt = killed / "reveal" / "state" / "forget.safetensors"
    kill_when(popen_rr("reveal", *args, "--run", str(killed)), ckpt.exists)
    assert stage_status(killed, "reveal") == "running"
    assert run_rr("reveal", *args, "--run", str(killed)).returncode == 0
    for name in ("forget.jsonl", "retain.jsonl", "bandit.jsonl"):
        assert read_jsonl(killed / "reveal" / name) == read_jsonl(whole / "reveal" / name), name


@pytest.mark.integration
def test_reveal_code_on_the_embedded_model(embedded, tmp_path: Path):
    run = tmp_path / "run"
    out = run_rr(
        "reveal", "--target", "code", "--run", str(run), "--budget", "24", "--retain-budget", "12"
    )
    assert out.returncode == 0, out.stderr
    forget = read_jsonl(run / "reveal" / "forget.jsonl")
    retain = read_jsonl(run / "reveal" / "retain.jsonl")
    bandit = read_jsonl(run / "reveal" / "bandit.jsonl")
    assert forget and retain
    assert all(FIELDS <= set(r) for r in forget + retain)
    assert all(r["relevance"] >= 0.5 for r in forget)
    assert sum("def " in r["response"] or "```" in r["response"] for r in forget) >= 0.8 * len(
        forget
    )
    assert {"step", "instruction", "reward", "relevance", "diversity", "ucb"} <= set(bandit[0])
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["stages"]["reveal"]["status"] == "done"
    assert manifest["stages"]["reveal"]["info"]["forget"] == len(forget)
    assert "best reveal instructions" in out.stdout
