"""The run directory: manifest, stages, resume, atomic writes and bad folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reveal_release.atomic import atomic_write_json, read_jsonl
from reveal_release.errors import RRError
from reveal_release.runs import RunDir


def test_new_run_writes_a_manifest(tmp_path: Path):
    run = RunDir.open(tmp_path / "r", {"model": "sha256:abc", "target": "code"})
    manifest = json.loads((tmp_path / "r" / "run.json").read_text())
    assert manifest["identity"] == {"model": "sha256:abc", "target": "code"}
    assert {"python", "torch", "transformers"} <= set(manifest["versions"])
    assert run.status("reveal") == "pending"


def test_stage_runs_once_then_is_skipped(tmp_path: Path):
    run = RunDir.open(tmp_path, {"target": "code"})
    calls = []
    for _ in range(2):
        with run.stage("reveal", {"budget": 4}) as st:
            if not st.done:
                calls.append(1)
                st.info["forget"] = 10
    assert calls == [1]
    reopened = RunDir.load(tmp_path)
    assert reopened.is_done("reveal") and reopened.stage_info("reveal") == {"forget": 10}


def test_failed_stage_is_marked_and_resumes(tmp_path: Path):
    run = RunDir.open(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with run.stage("release"):
            raise KeyboardInterrupt
    assert RunDir.load(tmp_path).status("release") == "failed"
    with run.stage("release") as st:
        assert not st.done
    assert run.manifest["stages"]["release"]["attempts"] == 2
    assert run.is_done("release")


def test_finished_stage_with_other_settings_is_an_error(tmp_path: Path):
    run = RunDir.open(tmp_path)
    with run.stage("reveal", {"budget": 4}):
        pass
    with pytest.raises(RRError, match="finished with other settings.*budget"):
        with run.stage("reveal", {"budget": 8}):
            pass


def test_folder_holding_a_different_run(tmp_path: Path):
    RunDir.open(tmp_path, {"target": "code"})
    with pytest.raises(RRError, match="already holds a different run.*target"):
        RunDir.open(tmp_path, {"target": "person"})


def test_non_empty_folder_without_manifest(tmp_path: Path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(RRError, match="not empty and has no run.json"):
        RunDir.open(tmp_path)
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_corrupt_manifest(tmp_path: Path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RRError, match="unreadable or corrupt"):
        RunDir.load(tmp_path)


def test_unwritable_run_folder(tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(RRError, match="cannot write to run folder"):
        RunDir.open(blocker / "run")
    with pytest.raises(RRError, match="cannot write to run folder"):
        RunDir.open("/proc/rr-run")


def test_load_without_run(tmp_path: Path):
    with pytest.raises(RRError, match="not a run folder"):
        RunDir.load(tmp_path)


def test_atomic_write_keeps_old_file_on_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"ok": 1})

    def full(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RRError, match="no space left on the device"):
        atomic_write_json(target, {"ok": 2})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_jsonl_round_trip_and_bad_line(tmp_path: Path):
    run = RunDir.open(tmp_path)
    run.write_jsonl("reveal/forget.jsonl", [{"a": 1}, {"b": "ü"}])
    assert run.read_jsonl("reveal/forget.jsonl") == [{"a": 1}, {"b": "ü"}]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(RRError, match="bad.jsonl:2 is not valid JSON"):
        read_jsonl(tmp_path / "bad.jsonl")


def test_atomic_writes_get_the_usual_file_mode(tmp_path: Path):
    target = tmp_path / "run.json"
    atomic_write_json(target, {})
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
