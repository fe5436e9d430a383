"""The GPU suite's dry run: the same three parts on tiny shapes on the CPU, so that the command a
GPU machine runs is known to work before it gets one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_suite_runs_dry_on_the_cpu(tmp_path):
    out = tmp_path / "suite"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--dry-run", "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "suite.json").read_text())
    methods = {(r["model"], r["method"]) for r in result["update_cost"]}
    assert methods == {("llama-tiny", m) for m in ("full", "lora", "r2f")}
    assert all(r["s_per_update"] > 0 and r["peak_bytes"] > 0 for r in result["update_cost"])
    samplers = [r["sampler"] for r in result["sampling"]]
    assert samplers == ["HF one at a time", "HF batched", "rr HFSampler"]
    assert all(r["tokens"] > 0 and r["tok_per_s"] > 0 for r in result["sampling"])
    stages = dict(result["release_round"]["stages"])
    assert any("training" in name for name in stages), stages
    assert result["release_round"]["train_steps"] == 2
    assert "| release round stage | s |" in done.stdout
