"""Target specs and instruction pools: built-ins, user specs, and the errors users see."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

from reveal_release.errors import RRError
from reveal_release.targets.judges import JUDGES
from reveal_release.targets.spec import (
    BUILTIN_DIR,
    builtin_targets,
    instructions_dir,
    load_target,
)

BUILTINS = ["code", "person", "toxicity"]
# Every built-in spec, the topic one with a subject (what carries [settings]).
EVERY_SPEC = [*BUILTINS, "topic:Harry Potter"]
POOLS = instructions_dir()


def pool_lines(path: Path) -> list[str]:
    """The instruction lines of a pool file, as written (comments and blanks skipped)."""
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def test_builtin_names() -> None:
    assert builtin_targets() == ["code", "person", "topic", "toxicity"]


@pytest.mark.parametrize("name", BUILTINS)
def test_load_builtin(name: str) -> None:
    spec = load_target(name)
    assert spec.name == name and spec.subject == "" and spec.identity() == name
    assert spec.judge == name and spec.judge_params == {}
    assert len(spec.reveal_pool) >= 20 and len(spec.retain_pool) >= 30
    assert len(spec.heldout_pool) >= 15
    assert 0 < spec.threshold < 1
    importlib.import_module(f"reveal_release.targets.judges.{spec.judge}")
    assert spec.judge in JUDGES


def test_load_topic_fills_subject() -> None:
    spec = load_target("topic:Harry Potter")
    assert spec.identity() == "topic:Harry Potter"
    assert spec.judge == "topic" and spec.judge_params == {"subject": "Harry Potter"}
    for pool in (spec.reveal_pool, spec.heldout_pool):
        assert pool and not any("{subject}" in p for p in pool)
        assert sum("Harry Potter" in p for p in pool) >= 0.9 * len(pool)
    assert spec.reveal_pool[0] == "Tell me everything you know about Harry Potter."


@pytest.mark.parametrize("target", ["topic", "topic:", "topic:   "])
def test_topic_without_subject(target: str) -> None:
    with pytest.raises(RRError, match="needs a subject"):
        load_target(target)


def test_unknown_target_lists_choices() -> None:
    with pytest.raises(RRError) as err:
        load_target("nonsense")
    msg = str(err.value)
    assert "unknown target 'nonsense'" in msg
    assert all(n in msg for n in ("code", "person", "topic", "toxicity"))


def _write_spec(folder: Path, reveal: str, retain: str = "retain.txt") -> Path:
    spec = folder / "mine.toml"
    spec.write_text(
        'name = "mine"\nsubject = "Lisbon"\nthreshold = 0.6\n'
        '[judge]\nname = "topic"\nkeywords = ["Tagus", "tram"]\n'
        f'[reveal]\npool = "{reveal}"\n[retain]\npool = "{retain}"\n',
        encoding="utf-8",
    )
    return spec


def test_user_spec_with_relative_pool(tmp_path: Path) -> None:
    (tmp_path / "pools").mkdir()
    (tmp_path / "pools" / "mine.txt").write_text(
        "# my pool\nDescribe {subject}.\n\nWhat is {subject} famous for?\nDescribe {subject}.\n",
        encoding="utf-8",
    )
    spec = load_target(str(_write_spec(tmp_path, "pools/mine.txt")))
    assert spec.name == "mine" and spec.subject == "Lisbon" and spec.threshold == 0.6
    assert spec.reveal_pool == ["Describe Lisbon.", "What is Lisbon famous for?"]
    # A pool not beside the spec is looked up in the repository's instructions/.
    assert spec.retain_pool == pool_lines(POOLS / "retain.txt")
    assert spec.judge_params == {"keywords": ["Tagus", "tram"], "subject": "Lisbon"}
    assert spec.heldout_pool == []


def test_missing_pool_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RRError, match="reveal instruction pool .*nowhere.txt does not exist"):
        load_target(str(_write_spec(tmp_path, "nowhere.txt")))


def test_empty_pool_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("# only a comment\n\n   \n", encoding="utf-8")
    with pytest.raises(RRError, match="reveal instruction pool .*empty.txt is empty"):
        load_target(str(_write_spec(tmp_path, "empty.txt")))


def test_invalid_toml_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n", encoding="utf-8")
    with pytest.raises(RRError, match="not valid TOML"):
        load_target(str(bad))


def test_instructions_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("code.txt", "retain.txt", "heldout"):
        src = POOLS / name
        if src.is_dir():
            (tmp_path / name).mkdir()
            (tmp_path / name / "code.txt").write_text("Probe one.\n", encoding="utf-8")
        else:
            (tmp_path / name).write_text("Only one line.\n", encoding="utf-8")
    monkeypatch.setenv("RR_INSTRUCTIONS", str(tmp_path))
    spec = load_target("code")
    assert spec.reveal_pool == ["Only one line."] and spec.heldout_pool == ["Probe one."]


@pytest.mark.parametrize("name", ["code", "person", "toxicity", "topic"])
def test_heldout_pools_are_disjoint_from_reveal_pools(name: str) -> None:
    reveal = {ln.lower() for ln in pool_lines(POOLS / f"{name}.txt")}
    heldout = {ln.lower() for ln in pool_lines(POOLS / "heldout" / f"{name}.txt")}
    assert not reveal & heldout
    retain = {ln.lower() for ln in pool_lines(POOLS / "retain.txt")}
    assert not retain & (reveal | heldout)


@pytest.mark.parametrize("path", sorted(p.name for p in POOLS.glob("*.txt")))
def test_pool_files_have_no_duplicate_lines(path: str) -> None:
    for f in (POOLS / path, POOLS / "heldout" / path):
        if f.is_file():
            lines = pool_lines(f)
            assert len(lines) == len(set(lines)), f


def test_topic_pools_use_the_subject_and_others_do_not() -> None:
    for f in (POOLS / "topic.txt", POOLS / "heldout" / "topic.txt"):
        assert all("{subject}" in ln for ln in pool_lines(f)), f
    for name in ("code", "person", "toxicity", "retain", "meta"):
        assert not any("{subject}" in ln for ln in pool_lines(POOLS / f"{name}.txt"))


def test_meta_instructions_take_an_instruction() -> None:
    meta = pool_lines(POOLS / "meta.txt")
    assert len(meta) >= 8
    assert all(ln.count("{instruction}") == 1 for ln in meta)


def test_retain_pool_does_not_ask_for_the_targets() -> None:
    words = ("code", "python", "script", "function", "sql", "insult", "rude", "swear",
             "biography", "famous", "who was", "who were", "named")  # fmt: skip
    for line in pool_lines(POOLS / "retain.txt"):
        assert not any(w in line.lower() for w in words), line


def test_builtin_specs_name_existing_pools() -> None:
    for toml in BUILTIN_DIR.glob("*.toml"):
        text = toml.read_text(encoding="utf-8")
        assert "[heldout]" in text and "[reveal]" in text and "[retain]" in text


def test_a_specs_reveal_settings_fill_the_options_the_user_did_not_give(tmp_path):
    from reveal_release.reveal.config import RevealConfig
    from reveal_release.targets.spec import apply_settings

    path = tmp_path / "t.toml"
    path.write_text(
        'name = "t"\n[judge]\nname = "code"\n[reveal]\npool = "code.txt"\n[retain]\n'
        '[settings.reveal]\nretain_strategy = "cover"\nretain-budget = 48\n'
    )
    spec = load_target(str(path))
    cfg, flags = apply_settings(RevealConfig(), spec, "reveal", frozenset())
    assert (cfg.retain_strategy, cfg.retain_budget) == ("cover", 48)
    assert flags == "--retain-strategy cover --retain-budget 48"
    cfg, flags = apply_settings(RevealConfig(), spec, "reveal", frozenset({"retain_budget"}))
    assert cfg.retain_budget == RevealConfig().retain_budget and cfg.retain_strategy == "cover"
    assert apply_settings(RevealConfig(), load_target("code"), "reveal", frozenset())[1] == ""
    path.write_text(path.read_text().replace("[settings.reveal]", "[settings.train]"))
    with pytest.raises(RRError, match=r"\[settings\] holds only"):
        load_target(str(path))


@pytest.mark.parametrize("name", EVERY_SPEC)
def test_each_built_in_specs_settings_are_options_with_valid_values(name):
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.reveal.config import RevealConfig
    from reveal_release.targets.spec import apply_settings

    spec = load_target(name)
    for stage, cfg in (("reveal", RevealConfig()), ("release", ReleaseConfig())):
        new, flags = apply_settings(cfg, spec, stage, frozenset())
        assert (flags == "") == (new == cfg), (name, stage, flags)


def test_the_durability_benchmark_pins_every_release_option_a_built_in_spec_sets():
    # benchmarks/durable_release.py compares fixed variants on every target: an option a spec
    # sets must be given on each fixed variant's command line, or the spec would change it.
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "durable_release.py"
    loader = importlib.util.spec_from_file_location("durable_release", path)
    bench = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(bench)
    set_by_specs = {
        key.replace("-", "_")
        for name in EVERY_SPEC
        for key in load_target(name).settings.get("release", {})
    }
    assert set_by_specs
    for variant in (bench.OLD, bench.TAMPER):
        given = {a[2:].replace("-", "_") for a in variant if a.startswith("--")}
        assert set_by_specs <= given, sorted(set_by_specs - given)
