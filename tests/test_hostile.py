"""Hostile and careless input, each case a real `rr` process: exit 2, one `rr: error:` line, no
traceback, and every file that existed before byte-identical after. Also two processes on one
run folder (the lock) and Ctrl-C (SIGINT to the process group) during a release."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, copy_run, popen_rr, run_rr, stage_status

from reveal_release.run_lock import LOCK_NAME

FAST = ["--steps", "20", "--checkpoint-every", "2", "--probes", "3", "--qa", "4",
        "--reveal-budget", "4", "--batch-size", "2"]  # fmt: skip


def snapshot(*roots: Path) -> dict[Path, bytes]:
    """Every file under the roots (or the root itself when it is a file) with its bytes."""
    out: dict[Path, bytes] = {}
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        out.update({p: p.read_bytes() for p in files})
    return out


def refused(out: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert the tool's refusal: exit 2, one error line, no traceback; the line."""
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr and "╭" not in out.stderr, out.stderr
    errors = [x for x in lines if x.startswith("rr: error:")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["release", "--target", "code"], ["No such option: --target", "rr release --help"]),
        (["release", "--rounds", "abc", "--run", "x"], ["'--rounds'", "integer"]),
        (["release", "--stop-rate", "1.5", "--run", "x"], ["--stop-rate must be in [0, 1]"]),
        (["nosuch"], ["No such command 'nosuch'"]),
        (["r2f"], ["Missing command", "rr r2f --help"]),
        (["reveal", "--target", "code", "--preset", "fast", "--run", "x"], ["unknown preset"]),
        (["reveal", "--run", "x"], ["Missing option '--target'"]),
    ],
    ids=[
        "unknown-option",
        "wrong-type",
        "out-of-range",
        "unknown-command",
        "no-subcommand",
        "unknown-preset",
        "missing-option",
    ],  # fmt: skip
)
def test_command_line_mistakes_get_one_line(args, needles, tmp_path):
    before = snapshot(tmp_path)
    refused(run_rr(*args), *needles)
    assert snapshot(tmp_path) == before


def test_r2f_fit_keeps_a_folder_it_did_not_make(tiny_folder, tmp_path):
    # It used to replace the folder with the decoder, deleting what the user kept there.
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    afile = tmp_path / "decoder"
    afile.write_text("a file, not a folder")
    before = snapshot(tmp_path)
    refused(run_rr("r2f", "fit", "--proxy", str(tiny_folder), "--out", str(out)), "not empty")
    refused(run_rr("r2f", "fit", "--proxy", str(tiny_folder), "--out", str(afile)), "is a file")
    assert snapshot(tmp_path) == before


def _holder(run: Path) -> dict:
    try:
        return json.loads((run / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def test_second_process_is_refused_and_a_killed_holders_lock_is_taken_over(revealed, tmp_path):
    run = copy_run(revealed, tmp_path)
    holder = popen_rr("release", "--run", str(run), "--rounds", "1", *FAST)
    deadline = time.time() + 300
    while _holder(run).get("pid") != holder.pid and holder.poll() is None:
        assert time.time() < deadline, "the release never took the lock"
        time.sleep(0.02)
    before = snapshot(run / "run.json", run / "reveal")
    start = time.perf_counter()
    second = run_rr("release", "--run", str(run), "--rounds", "1", *FAST)
    took = time.perf_counter() - start
    line = refused(second, "is in use by", f"pid {holder.pid}", "rr release --run")
    assert holder.poll() is None, "the holder must still run while the second is refused"
    assert snapshot(run / "reveal") == {
        p: b for p, b in before.items() if p.is_relative_to(run / "reveal")
    }  # fmt: skip
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    again = run_rr("release", "--run", str(run), "--rounds", "1", *FAST)
    assert again.returncode == 0, again.stderr
    assert f"took over the lock of pid {holder.pid}" in again.stderr
    assert stage_status(run, "round-1") == "done"
    assert _holder(run) == {}, "a clean exit leaves the lock naming no holder"
    print(f"second process refused in {took:.2f} s (interpreter start included): {line}")


def test_ctrl_c_says_what_is_kept_and_the_rerun_resumes(revealed, tmp_path):
    run = copy_run(revealed, tmp_path)
    args = ["release", "--run", str(run), "--rounds", "1", *FAST]
    proc = subprocess.Popen(
        [sys.executable, "-m", "reveal_release", *args], cwd=REPO, env=os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while not (run / "round-1" / "train-state.json").exists() and proc.poll() is None:
        assert time.time() < deadline, "the release never saved a training checkpoint"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    said = " ".join(err.split())
    assert "rr: interrupted: finished stages and saved training steps are kept" in said, err
    assert f"resume with: rr {' '.join(args)}" in said, err
    assert (run / "round-1" / "train-state.json").exists()  # what the rerun resumes from
    again = run_rr(*args)
    assert again.returncode == 0, again.stderr
    assert stage_status(run, "round-1") == "done"
    assert "took over" not in again.stderr  # an interrupt exits cleanly: no stale lock


def _write(rel: str, data: bytes):
    def change(run: Path) -> None:
        (run / rel).write_bytes(data)

    return change


def _link_round(run: Path) -> None:
    elsewhere = run.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the run's")
    (run / "round-1").symlink_to(elsewhere, target_is_directory=True)


@pytest.mark.parametrize(
    "change, needles",
    [
        (_write("reveal/forget.jsonl", b'{"foo": 1}\n'), ["forget.jsonl:1 has no 'prompt'"]),
        (_write("reveal/forget.jsonl", b'{"prompt": "p", "response": "r"}\n{"prompt": 1}\n'),
         ["forget.jsonl:2 'prompt' must be a string, not int"]),
        (_write("reveal/retain.jsonl", b'{"prompt": "p", "response": ["r"]}\n'),
         ["retain.jsonl:1 'response' must be a string, not list"]),
        (_write("reveal/forget.jsonl", b'{"prompt": "p", "response": "r", "relevance": "hi"}\n'),
         ["'relevance' must be a number"]),
        (_write("reveal/forget.jsonl", b"\x7fELF\x02\x01\x01\x00\xd0\xff\n"), ["not UTF-8 text"]),
        (_write("reveal/forget.jsonl", b"[1, 2]\n"), ["is list, not an object"]),
        (_write("reveal/forget.jsonl", b"{not json\n"), ["forget.jsonl:1 is not valid JSON"]),
        (_write("run.json", b"[1, 2]\n"), ["is not a reveal-release manifest"]),
        (_write("run.json", b'{"format": 1, "stages": {"reveal": 5}}'),
         ["is not a reveal-release manifest"]),
        (_write("run.json", b'{"format": 1, "stages": {}, "identity": []}'),
         ["is not a reveal-release manifest"]),
        (_link_round, ["round-1 is a symbolic link", "does not follow links"]),
    ],
    ids=["forget-wrong-keys", "forget-wrong-type", "retain-wrong-type", "relevance-not-number",
         "forget-binary", "forget-not-object", "forget-not-json", "manifest-list",
         "manifest-stage-not-object", "manifest-identity-list", "round-folder-symlink"],
)  # fmt: skip
def test_a_damaged_or_hostile_run_folder_is_refused_untouched(revealed, tmp_path, change, needles):
    run = copy_run(revealed, tmp_path)
    change(run)
    before = snapshot(tmp_path)
    refused(run_rr("release", "--run", str(run), *FAST), *needles)
    after = snapshot(tmp_path)
    assert {p: b for p, b in after.items() if p.name != LOCK_NAME} == {
        p: b for p, b in before.items() if p.name != LOCK_NAME
    }  # fmt: skip


SPEC_HEAD = 'name = "x"\n[judge]\nname = "code"\n[retain]\npool = "retain.txt"\n'


@pytest.mark.parametrize(
    "spec, files, needles",
    [
        (SPEC_HEAD + '[reveal]\npool = "/etc/passwd"\n', {},
         ["reveal.pool = '/etc/passwd' is outside"]),
        (SPEC_HEAD + '[reveal]\npool = "../../../../../../etc/passwd"\n', {}, ["is outside"]),
        (SPEC_HEAD + '[reveal]\npool = "link.txt"\n', {"link.txt": "->/etc/hostname"},
         ["is outside"]),
        (SPEC_HEAD + "[reveal]\npool = 7\n", {}, ["reveal.pool must be a file name"]),
        (SPEC_HEAD + '[reveal]\npool = "big.txt"\n', {"big.txt": "x" * 5000 + "\n"},
         ["line 1 is over 2000 characters"]),
        (SPEC_HEAD + '[reveal]\npool = "huge.txt"\n', {"huge.txt": "write code\n" * 200_000},
         ["is over 1 MB"]),
        (SPEC_HEAD + '[reveal]\npool = "bin.txt"\n', {"bin.txt": b"\xff\xfe\x00code"},
         ["is not UTF-8 text"]),
        ('threshold = "high"\n' + SPEC_HEAD + '[reveal]\npool = "code.txt"\n', {},
         ["threshold must be a number in [0, 1]"]),
        ("threshold = 1.5\n" + SPEC_HEAD + '[reveal]\npool = "code.txt"\n', {},
         ["threshold must be in [0, 1], got 1.5"]),
        ('name = "x"\njudge = "code"\n[reveal]\npool = "code.txt"\n[retain]\npool = "r.txt"\n',
         {}, ["'judge' must be a table"]),
        (SPEC_HEAD.replace('"code"', '"nope"') + '[reveal]\npool = "code.txt"\n', {},
         ["unknown judge 'nope': choose one of code, person, topic, toxicity"]),
        (b"name = \"x\xff\"\n", {}, ["is not UTF-8 text"]),
    ],
    ids=["pool-absolute", "pool-dotdot", "pool-link-out", "pool-not-string", "pool-long-line",
         "pool-too-big", "pool-binary", "threshold-string", "threshold-range", "judge-not-table",
         "unknown-judge", "spec-binary"],
)  # fmt: skip
def test_a_hostile_target_spec_is_refused_before_any_model_work(tmp_path, spec, files, needles):
    for name, content in files.items():
        if isinstance(content, str) and content.startswith("->"):
            (tmp_path / name).symlink_to(content[2:])
        elif isinstance(content, bytes):
            (tmp_path / name).write_bytes(content)
        else:
            (tmp_path / name).write_text(content)
    path = tmp_path / "spec.toml"
    path.write_bytes(spec if isinstance(spec, bytes) else spec.encode())
    before = snapshot(tmp_path)
    run = tmp_path / "run"
    refused(run_rr("reveal", "--target", str(path), "--run", str(run), "--budget", "2"), *needles)
    assert snapshot(tmp_path) == before and not run.exists()
