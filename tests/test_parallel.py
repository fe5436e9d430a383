"""`rr release --processes 2` (torch.distributed.run, Accelerate on gloo) on the tiny model: the
same release as one process with the same global batch, resumable after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import REPO, copy_run, run_rr, stage_status, weights

from reveal_release.errors import RRError
from reveal_release.launch import launcher
from reveal_release.parallel import Processes

# One round, 8 steps of a global batch of 4 (2 per process under two processes).
# On the CPU everywhere (gloo), so a one-GPU machine runs these too; the GPU launch is below.
ARGS = [
    "--rounds", "1", "--steps", "8", "--probes", "3", "--qa", "4", "--batch-size", "4",
    "--device", "cpu",
]  # fmt: skip
# How far the two-process release may sit from the one-process one, relative to the size of
# the update: float rounding alone (the halves of a batch are padded to other widths). Measured
# 4.9e-7 (plain) and 7.2e-7 (SAM); without the retain loss's token shares, 5e-4.
RELATIVE_TOLERANCE = 1e-5
# With the simulated attacker (--tamper-steps) the gap is larger: two Adam steps of the
# attacker come between the rounding and the update. Measured 1.5e-5; with every process
# training its own attacker on its half of the batch (before 2026-12-07), 0.92.
TAMPER_TOLERANCE = 1e-4


def vary_lengths(run) -> None:
    """Cut the run's answers to different lengths (the tiny model's all run to the token
    limit), so that the halves of a batch hold different numbers of answer tokens."""
    for name in ("forget", "retain"):
        path = run / "reveal" / f"{name}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for i, row in enumerate(rows):
            row["response"] = row["response"][: 8 + 17 * (i % 5)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def launch(*args: str, **kw) -> subprocess.Popen:
    """The real `rr ARGS --processes 2` (its own process group: rr, the launcher, both ranks)."""
    cmd = [sys.executable, "-m", "reveal_release", *args, "--processes", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, text=True, **kw)


def launched(*args: str) -> subprocess.CompletedProcess:
    """Run `rr` under the launcher and wait for it."""
    proc = launch(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=900)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def update_gap(a: dict, b: dict, base: dict) -> float:
    """max over tensors of |a - b| / |a - base| (Frobenius norms; tensors the release changed)."""
    gaps = []
    for name, w in a.items():
        moved = float((w.float() - base[name].float()).norm())
        if moved > 0:
            gaps.append(float((w.float() - b[name].float()).norm()) / moved)
    assert gaps, "the release changed no weight"
    return max(gaps)


def test_a_shard_is_every_world_th_example_from_the_rank():
    idx = [7, 3, 9, 1, 4, 0]
    assert Processes(0, 2).shard(idx) == [7, 9, 4]
    assert Processes(1, 2).shard(idx) == [3, 1, 0]
    assert Processes().shard(idx) == idx


def _forget_grads(tiny_model, sync: Processes) -> list:
    """The NPO term's gradient on the LoRA factors at step 3, on this process's shard."""
    import copy

    from reveal_release.release.config import ReleaseConfig
    from reveal_release.train.lora import attach_lora, trainable
    from reveal_release.train.objective import UnlearnObjective

    rows = [
        {"prompt": f"Write function number {i}.", "response": "def f(x):" + " return x" * (i + 1)}
        for i in range(6)
    ]
    cfg = ReleaseConfig(rank=4, alpha=8, batch_size=4, beta=0.5)
    peft = attach_lora(copy.deepcopy(tiny_model.model), cfg, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # B != 0, so the NPO term has a gradient
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    objective = UnlearnObjective(peft, tiny_model.tokenizer, rows, [], cfg, cfg, (3, 4), sync)
    objective.terms(3)["forget"].backward()
    return [p.grad.clone() for p in trainable(peft).values()]


def test_each_process_takes_half_the_batch_and_the_mean_is_the_whole_batchs_gradient(tiny_model):
    whole = _forget_grads(tiny_model, Processes())
    first, second = (
        _forget_grads(tiny_model, Processes(0, 2)),
        _forget_grads(tiny_model, Processes(1, 2)),
    )
    assert not torch.allclose(first[0], whole[0])  # each process saw a different half
    # float32 sums in another order (each half pads to its own length) differ by up to 5e-6
    # on some CPUs, where each half's gradient is up to 3.6 away from the whole's
    for w, a, b in zip(whole, first, second, strict=True):
        assert torch.allclose((a + b) / 2, w, atol=1e-4)


# SAM's perturbation is along the processes' mean gradient, so it too matches one process; the
# simulated relearning attacker trains on the whole batch's mean gradient, so every process
# draws and trains the one attacker a single process would.
@pytest.mark.parametrize(
    "extra",
    [[], ["--sam-rho", "0.05"], ["--tamper-steps", "2", "--tamper-lr", "1e-2"]],
    ids=["plain", "sam", "tamper"],
)
def test_two_processes_train_the_release_one_process_trains(revealed, tiny_folder, tmp_path, extra):
    one = copy_run(revealed, tmp_path, "one")
    two = copy_run(revealed, tmp_path, "two")
    vary_lengths(one)
    vary_lengths(two)
    out = run_rr("release", "--run", str(one), *ARGS, *extra)
    assert out.returncode == 0, out.stderr
    res = launched("release", "--run", str(two), *ARGS, *extra)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("before / after") == 1  # the main process alone talks
    assert "2 processes: this one reveals, measures and writes" in res.stderr
    base = weights(tiny_folder)
    gap = update_gap(weights(one / "model"), weights(two / "model"), base)
    print(f"two-process release vs one process: {gap:.2e} of the update")
    assert gap < (TAMPER_TOLERANCE if "--tamper-steps" in extra else RELATIVE_TOLERANCE)
    # The losses each process logged are the mean over both: the same history as one process.
    h1 = json.loads((one / "round-1" / "train-result.json").read_text())["history"]
    h2 = json.loads((two / "round-1" / "train-result.json").read_text())["history"]
    assert len(h1) == len(h2) == 8
    assert h2[0]["forget"] == pytest.approx(h1[0]["forget"], rel=1e-4)


def test_a_killed_two_process_release_resumes(revealed, tmp_path):
    args = [*ARGS, "--steps", "16", "--checkpoint-every", "2"]
    whole = copy_run(revealed, tmp_path, "whole")
    res = launched("release", "--run", str(whole), *args)
    assert res.returncode == 0, res.stderr[-3000:]

    run = copy_run(revealed, tmp_path, "killed")
    proc = launch("release", "--run", str(run), *args, stdout=subprocess.DEVNULL,
                  stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 600
    while not (run / "round-1" / "train-state.json").exists() and proc.poll() is None:
        assert time.time() < deadline
        time.sleep(0.02)
    assert proc.poll() is None, "the release finished before the kill: make it longer"
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both processes, at once
    proc.wait()
    assert stage_status(run, "round-1") == "running"
    res = launched("release", "--run", str(run), *args)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = json.loads((run / "round-1" / "train-result.json").read_text())
    assert resumed["resumed_from"] > 0
    got, want = weights(run / "model"), weights(whole / "model")
    for name, w in want.items():
        assert torch.allclose(got[name], w, atol=1e-5), name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "3"], "--batch-size 3 does not split over 2 processes"),
        (["--mask", "disruption", "--retain-loss", "nll"], "--mask disruption trains in one"),
    ],
)
def test_what_cannot_train_over_two_processes_is_refused_in_one_line(
    revealed, tmp_path, args, message
):
    run = copy_run(revealed, tmp_path)
    res = launched("release", "--run", str(run), "--rounds", "1", "--device", "cpu", *args)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr and "ChildFailedError" not in res.stderr
    assert stage_status(run, "round-1") == ""  # nothing trained, nothing written


def test_only_release_runs_under_a_launcher(revealed, tmp_path):
    # What a launcher sets (WORLD_SIZE) on another command: refused before any work.
    res = run_rr("eval", "--run", str(copy_run(revealed, tmp_path)), env={"WORLD_SIZE": "2"})
    assert res.returncode == 2
    assert "only `rr release` trains over several" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_the_launcher_is_accelerates_on_gpus_and_torchrun_on_the_cpu():
    gpu = launcher(2, gpus=2)
    assert gpu[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"]
    assert "--num_processes=2" in gpu
    cpu = launcher(2, gpus=0)
    assert cpu[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=2" in cpu
    assert launcher(2, gpus=2, device="cpu")[1:3] == ["-m", "torch.distributed.run"]
    with pytest.raises(RRError, match="torch sees 2 GPU"):
        launcher(3, gpus=2)
    with pytest.raises(RRError, match="one GPU per process"):
        launcher(2, gpus=2, device="cuda:1")


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus_train_the_release_one_gpu_trains(revealed, tiny_folder, tmp_path):
    args = [a for a in ARGS if a not in ("--device", "cpu")]
    one = copy_run(revealed, tmp_path, "one")
    two = copy_run(revealed, tmp_path, "two")
    assert run_rr("release", "--run", str(one), *args).returncode == 0
    res = launched("release", "--run", str(two), *args)
    assert res.returncode == 0, res.stderr[-3000:]
    # bf16 weights on CUDA: the two runs' kernels round differently, so a looser bound.
    assert update_gap(weights(one / "model"), weights(two / "model"), weights(tiny_folder)) < 0.05
