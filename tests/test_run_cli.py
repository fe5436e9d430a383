"""`rr run` and `--preset` through the real command line, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import run_rr, write_spec

from reveal_release.presets import PRESETS


def test_rr_run_does_the_three_stages_with_one_timing_table_and_reads_them_back(
    tiny_folder: Path, tmp_path: Path
) -> None:
    spec, run = write_spec(tmp_path), tmp_path / "run"
    out = run_rr(
        "run", "--model", str(tiny_folder), "--target", str(spec), "--run", str(run),
        "--preset", "quick",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    stages = json.loads((run / "run.json").read_text())["stages"]
    assert all(stages[s]["status"] == "done" for s in ("reveal", "release"))
    reveal = stages["reveal"]["config"]
    assert (reveal["budget"], reveal["retain_budget"]) == (32, 16)  # the preset's
    m = json.loads((run / "report" / "metrics.json").read_text())
    quick = PRESETS["quick"]["eval"]
    assert m["settings"]["attacks"] == quick["attacks"].split(",")
    assert m["baseline_ga"] == {"skipped": "turned off (--no-baseline)"}
    assert "qa_accuracy" not in m["attacks"]["quant-int4"]["released"]  # --no-quant-utility
    # `rr eval` read both models' held-out and utility figures that `rr release` measured.
    assert m["cache"]["hits"] >= 4
    table_at = out.stdout.index("time by stage: rr run")
    table = out.stdout[table_at : out.stdout.index("rr eval: anything")]
    for stage in ("reveal: forget search", "release: round 1: training",
                  "eval: released: attack relearn", "total (wall)"):  # fmt: skip
        assert stage in table, stage
    # The before/after and attack tables come last, then the report's path.
    assert "quant-int4-g128" in out.stdout[out.stdout.index("rr eval: anything") :]
    assert out.stderr.rstrip().endswith("report.html")
    assert (run / "report" / "report.html").is_file()
    assert "preset quick sets --budget 32 --retain-budget 16" in out.stderr

    again = run_rr(
        "run", "--model", str(tiny_folder), "--target", str(spec), "--run", str(run),
        "--preset", "quick",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "reveal already finished" in again.stderr
    assert "release already finished" in again.stderr
    assert "(0 figures computed" in again.stderr


def test_an_option_given_wins_over_the_preset_and_the_preset_over_the_spec(
    tiny_folder: Path, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text() + "\n[settings.reveal]\nretain_budget = 2\nseed = 3\n")
    run = tmp_path / "run"
    out = run_rr(
        "reveal", "--model", str(tiny_folder), "--target", str(spec), "--run", str(run),
        "--preset", "quick", "--budget", "6",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    cfg = json.loads((run / "run.json").read_text())["stages"]["reveal"]["config"]
    # --budget given; retain_budget from the preset (not the spec's 2); seed from the spec.
    assert (cfg["budget"], cfg["retain_budget"], cfg["seed"]) == (6, 16, 3)


def test_an_unknown_preset_is_one_line_that_lists_them(tmp_path: Path) -> None:
    for cmd in (["run", "--target", "code"], ["reveal", "--target", "code"], ["release"], ["eval"]):
        out = run_rr(*cmd, "--run", str(tmp_path / "run"), "--preset", "fast")
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert lines == ["rr: error: unknown preset 'fast': choose one of quick, default, thorough"]
    assert not (tmp_path / "run").exists()


def test_help_names_the_presets() -> None:
    out = run_rr("run", "--help")
    assert out.returncode == 0
    assert "quick" in out.stdout and "thorough" in out.stdout
    top = run_rr("--help").stdout
    assert "rr run --target" in top and "quick" in top and "thorough" in top
