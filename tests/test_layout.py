"""The code's shape: parts import one way, no cycle; short functions; a wheel with its data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPO


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / name), *args], capture_output=True, text=True
    )


def test_parts_import_only_the_parts_below_them():
    out = _script("import_graph.py", "--check")
    assert out.returncode == 0, out.stdout
    assert "cycles: none" in out.stdout and "upward imports: none" in out.stdout


def test_the_layering_check_sees_an_upward_import(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import import_graph
    finally:
        sys.path.pop(0)
    pkg = tmp_path / "reveal_release"
    (pkg / "train").mkdir(parents=True)
    (pkg / "release").mkdir()
    (pkg / "train" / "loop.py").write_text("from reveal_release.release import rounds\n")
    (pkg / "release" / "rounds.py").write_text("import reveal_release.train.loop\n")
    g = import_graph.graph(pkg)
    assert g == {"train": {"release"}, "release": {"train"}}
    assert import_graph.cycles(g) == [["release", "train"]]
    assert import_graph.upward(g) == [("train", "release")]


def test_no_function_outside_tests_is_over_60_lines():
    out = _script("code_size.py", "--check", "--max-function", "60")
    assert out.returncode == 0, out.stdout


def test_the_instruction_pools_are_found_through_the_package():
    from reveal_release.targets.spec import instructions_dir

    found = instructions_dir()
    assert found.parent == REPO / "reveal_release"
    assert (found / "code.txt").is_file() and (found / "heldout" / "code.txt").is_file()
    assert sorted(p.name for p in found.glob("*.txt")) == sorted(
        p.name for p in (REPO / "instructions").glob("*.txt")
    )


@pytest.mark.slow
def test_the_wheel_ships_pools_data_and_specs(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    (wheel,) = tmp_path.glob("reveal_release-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    pools = [
        f"reveal_release/instructions/{p.relative_to(REPO / 'instructions')}"
        for p in (REPO / "instructions").rglob("*.txt")
    ]
    assert pools and set(pools) <= names
    for shipped in (
        "reveal_release/metrics/data/general_qa.jsonl",
        "reveal_release/metrics/data/plain_text.txt",
        "reveal_release/evaluate/attacks/templates/jailbreak.txt",
        "reveal_release/targets/builtin/code.toml",
    ):
        assert shipped in names, shipped
