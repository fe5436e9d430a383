"""Hostile and careless input, each case a real `rr` process: exit 2, one `rr: error:` line, no
traceback, and every file that existed before byte-identical after. This file: command-line
options, paths and links, run folders, target specs (models, decoders, reports and sizes are in
test_hostile_files.py; two processes and Ctrl-C in test_hostile_processes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import copy_run, refused, run_rr, snapshot

from reveal_release.run_lock import LOCK_NAME

FAST = ["--steps", "20", "--checkpoint-every", "2", "--probes", "3", "--qa", "4",
        "--reveal-budget", "4", "--batch-size", "2"]  # fmt: skip


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
        (
            ["release", "--run", "x", "--update", "sgd"],
            ["unknown update rule 'sgd': choose one of lora, r2f"],
        ),
        (["generate", "--max-new-tokens", "0", "hi"], ["'--max-new-tokens'", "equal to 1"]),
        (["eval", "--run", "x", "--model", "y"], ["--run"]),
        (["release", "--run", "x", "--device", "gpu"], ["unknown device 'gpu'", "cuda:N"]),
        (["release", "--run", "x", "--r2f-momentum", "1"], ["--r2f-momentum must be in [0, 1)"]),
        (
            ["release", "--run", "x", "--r2f-precondition", "adam"],
            ["unknown preconditioner 'adam': choose none, factored, whiten, galore"],
        ),
        (
            [
                "release",
                "--run",
                "x",
                "--update",
                "r2f",
                "--decoder",
                "d",
                "--r2f-precondition",
                "galore",
                "--r2f-momentum",
                "0.9",
            ],
            ["--r2f-momentum does not combine with --r2f-precondition galore"],
        ),  # fmt: skip
    ],
    ids=[
        "unknown-option",
        "wrong-type",
        "out-of-range",
        "unknown-command",
        "no-subcommand",
        "unknown-preset",
        "missing-option",
        "unknown-update-rule",
        "new-tokens-zero",
        "run-and-model",
        "unknown-device",
        "momentum-of-one",
        "unknown-preconditioner",
        "galore-with-momentum",
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


def _outside(tmp: Path) -> Path:
    """A file of the user's beside the run (it must survive whatever rr is asked)."""
    mine = tmp / "mine"
    mine.mkdir(exist_ok=True)
    (mine / "notes.txt").write_text("the user's notes")
    return mine


PATH_CASES = {
    "export-out-file": (lambda t, r: ["export", "--run", r, "--out", f"{_outside(t)}/notes.txt"],
                        ["is a file, not a folder"]),
    "export-out-not-empty": (lambda t, r: ["export", "--run", r, "--out", str(_outside(t))],
                             ["exists and is not empty"]),
    "export-out-link": (lambda t, r: ["export", "--run", r, "--out", _link(t)],
                        ["is a symbolic link"]),
    "export-format": (lambda t, r: ["export", "--run", r, "--out", f"{t}/x", "--format", "zip"],
                      ["unknown export format 'zip': choose merged or adapters"]),
    "eval-out-file": (lambda t, r: ["eval", "--run", r, "--out", f"{_outside(t)}/notes.txt"],
                      ["is a file, not a folder: choose a new --out"]),
    "eval-out-foreign": (lambda t, r: ["eval", "--run", r, "--out", str(_outside(t))],
                         ["holds files rr did not write (notes.txt)"]),
    "reveal-run-file": (lambda t, r: ["reveal", "--target", "code", "--run",
                                      f"{_outside(t)}/notes.txt"],
                        ["is a file, not a folder: choose a new --run"]),
    "reveal-run-foreign": (lambda t, r: ["reveal", "--target", "code", "--run", str(_outside(t))],
                           ["holds other files (notes.txt) and is not a run folder"]),
    "lock-file-link": (lambda t, r: _swap(Path(r) / LOCK_NAME, f"{_outside(t)}/notes.txt",
                                          ["release", "--run", r]),
                       ["cannot lock run folder"]),
    "forget-set-link": (lambda t, r: _swap(Path(r) / "reveal" / "forget.jsonl", "/etc/passwd",
                                           ["release", "--run", r]),
                        ["forget.jsonl is a symbolic link"]),
}  # fmt: skip


def _link(tmp: Path) -> str:
    link = tmp / "link"
    link.symlink_to(tmp / "elsewhere", target_is_directory=True)
    return str(link)


def _swap(path: Path, target: str, args: list[str]) -> list[str]:
    """Replace `path` with a symbolic link to `target`; the command to run."""
    path.unlink(missing_ok=True)
    path.symlink_to(target)
    return args


@pytest.mark.parametrize("case", PATH_CASES)
def test_paths_and_links_that_leave_the_run_or_hit_the_users_files(case, released_run, tmp_path):
    run = copy_run(released_run, tmp_path)
    make, needles = PATH_CASES[case]
    args = make(tmp_path, str(run))
    before = snapshot(tmp_path)
    refused(run_rr(*args), *needles)
    after = snapshot(tmp_path)
    assert {p: b for p, b in after.items() if p.name != LOCK_NAME} == {
        p: b for p, b in before.items() if p.name != LOCK_NAME
    }  # fmt: skip


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
