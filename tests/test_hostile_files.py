"""Hostile and damaged files, each case a real `rr` process: exit 2, one `rr: error:` line, no
traceback, every file that existed before byte-identical after, and nothing unpickled. Kinds:
model folders, a run's released rounds, R2F decoders, a report's metrics.json, sizes."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from helpers import copy_run, refused, run_rr, snapshot

from reveal_release.run_lock import LOCK_NAME

FAST = ["--steps", "4", "--probes", "3", "--qa", "4", "--batch-size", "2"]


class Planted:
    """A pickle that, if anything unpickled it, would leave a file named in its payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"weights": Planted(marker)}))


def _same_but_lock(before: dict, after: dict) -> None:
    assert {p: b for p, b in after.items() if p.name != LOCK_NAME} == {
        p: b for p, b in before.items() if p.name != LOCK_NAME
    }  # fmt: skip


# -- model folders -------------------------------------------------------------------------
def _model_copy(tiny: Path, tmp: Path, change) -> Path:
    folder = tmp / "model"
    shutil.copytree(tiny, folder)
    change(folder, tmp)
    return folder


def _config(**values):
    def change(folder: Path, tmp: Path) -> None:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, **values}))

    return change


def _pickled_only(folder: Path, tmp: Path) -> None:
    (folder / "model.safetensors").unlink()
    _plant(folder / "pytorch_model.bin", tmp / "UNPICKLED")


MODEL_CASES = {
    "not-a-model": (lambda f, t: None, "notes", ["is neither a GGUF file nor a model folder"]),
    "pickled-weights-only": (_pickled_only, None, ["holds only pickled weights"]),
    "garbage-safetensors": (
        lambda f, t: (f / "model.safetensors").write_bytes(b"\x00" * 64), None,
        ["could not load the model", "SafetensorError"],
    ),
    "no-config": (lambda f, t: (f / "config.json").unlink(), None, ["no config.json"]),
    "config-not-json": (lambda f, t: (f / "config.json").write_text("{not json"), None,
                        ["could not load the model"]),
    "unknown-architecture": (_config(model_type="nosuchmodel"), None,
                             ["could not load the model", "nosuchmodel"]),
    "shapes-do-not-match": (_config(hidden_size=128, intermediate_size=256), None,
                            ["the shapes of its weights do not match its config.json"]),
    # It used to load, with the two layers the weights lack initialised at random.
    "weights-missing-layers": (_config(num_hidden_layers=4), None,
                               ["lack 18 of the tensors", "model.layers.2."]),
}  # fmt: skip


@pytest.mark.parametrize("case", MODEL_CASES)
def test_a_bad_model_folder_is_refused_and_nothing_is_unpickled(case, tiny_folder, tmp_path):
    change, plain_file, needles = MODEL_CASES[case]
    if plain_file:
        model = tmp_path / "notes.txt"
        model.write_text("not a model")
    else:
        model = _model_copy(tiny_folder, tmp_path, change)
    before = snapshot(tmp_path)
    refused(run_rr("generate", "--model", str(model), "hello"), *needles)
    assert snapshot(tmp_path) == before and not (tmp_path / "UNPICKLED").exists()


def test_prompts_and_answers_that_do_not_fit_the_context_are_refused(tiny_folder, tmp_path):
    before = snapshot(tmp_path)
    long = "write code " * 300  # over the tiny model's 512 positions
    refused(run_rr("generate", "--model", str(tiny_folder), long), "tokens in the chat template",
            "context (512)")  # fmt: skip
    refused(run_rr("generate", "--model", str(tiny_folder), "--max-new-tokens", "600", "hi"),
            "600 new tokens do not fit this model's context (512 tokens)")  # fmt: skip
    assert snapshot(tmp_path) == before


# -- a released run's files ------------------------------------------------------------------
def _adapter_pickled(run: Path) -> list[str]:
    adapter = run / "round-1" / "adapter"
    (adapter / "adapter_model.safetensors").unlink()
    _plant(adapter / "adapter_model.bin", run.parent / "UNPICKLED")
    return ["release", "--run", str(run), "--rounds", "2", *FAST]


def _export_pickled_adapter(run: Path) -> list[str]:
    _adapter_pickled(run)
    return ["export", "--run", str(run), "--out", str(run.parent / "x"), "--format", "adapters"]


def _model_with_pickle(run: Path) -> list[str]:
    _plant(run / "model" / "pytorch_model.bin", run.parent / "UNPICKLED")
    return ["export", "--run", str(run), "--out", str(run.parent / "x")]


def _model_pickled_only(run: Path) -> list[str]:
    (run / "model" / "model.safetensors").unlink()
    _plant(run / "model" / "pytorch_model.bin", run.parent / "UNPICKLED")
    return ["eval", "--run", str(run), "--probes", "3", "--qa", "4"]


def _rewrite(rel: str, data: bytes, *args: str):
    def change(run: Path) -> list[str]:
        (run / rel).write_bytes(data)
        return [a.replace("RUN", str(run)) for a in args]

    return change


def _round_deleted_under_a_later_one(run: Path) -> list[str]:
    shutil.copytree(run / "round-1", run / "round-2")
    stages = json.loads((run / "run.json").read_text())
    stages["stages"]["round-2"] = stages["stages"]["round-1"]
    (run / "run.json").write_text(json.dumps(stages))
    shutil.rmtree(run / "round-1")
    return ["release", "--run", str(run), "--rounds", "2", *FAST]


RELEASE = ("release", "--run", "RUN", "--rounds", "2", *FAST)
RUN_CASES = {
    "adapter-pickled-only": (_adapter_pickled, ["holds no adapter_model.safetensors"]),
    "export-adapter-pickled": (_export_pickled_adapter, ["holds no adapter_model.safetensors"]),
    "export-model-with-pickle": (_model_with_pickle, ["holds pytorch_model.bin", "pickled"]),
    "eval-model-pickled-only": (_model_pickled_only, ["holds only pickled weights"]),
    "round-metrics-not-json": (_rewrite("round-1/metrics.json", b"{oops", *RELEASE),
                               ["round-1/metrics.json is not valid JSON", "delete"]),
    "round-metrics-wrong-type": (
        _rewrite("round-1/metrics.json", b'{"heldout_reveal_rate": "low"}', *RELEASE),
        ["round-1/metrics.json: heldout_reveal_rate must be a number, not str"],
    ),
    "base-metrics-missing-key": (_rewrite("release/base-metrics.json", b"{}", *RELEASE),
                                 ["base-metrics.json has no 'heldout_reveal_rate'"]),
    "base-metrics-binary": (_rewrite("release/base-metrics.json", b"\xff\xfe\x00", *RELEASE),
                            ["base-metrics.json is not UTF-8 text"]),
    "model-marker-list": (
        _rewrite("model/rr-model.json", b"[1]", "export", "--run", "RUN", "--out", "RUN-x",
                 "--format", "adapters"),
        ["rr-model.json must be an object, not list"],
    ),
    "round-deleted-under-later": (_round_deleted_under_a_later_one,
                                  ["round-1 was deleted, but", "round-2 was trained on top"]),
}  # fmt: skip


@pytest.mark.parametrize("case", RUN_CASES)
def test_a_damaged_released_run_is_refused_untouched(case, released_run, tmp_path):
    run = copy_run(released_run, tmp_path)
    change, needles = RUN_CASES[case]
    args = change(run)
    before = snapshot(tmp_path)
    refused(run_rr(*args), *needles)
    _same_but_lock(before, snapshot(tmp_path))
    assert not (tmp_path / "UNPICKLED").exists(), "rr unpickled a file"
    assert not (tmp_path / "x").exists() and not Path(f"{run}-x").exists()


def test_a_deleted_round_is_trained_again(released_run, tmp_path):
    # What a damaged round's error advises (delete the round folder, rerun) must work.
    run = copy_run(released_run, tmp_path)
    shutil.rmtree(run / "round-1")
    out = run_rr("release", "--run", str(run), "--rounds", "1", *FAST)
    assert out.returncode == 0, out.stderr
    assert "round folders deleted since they finished: 1; training them again" in out.stderr
    assert (run / "round-1" / "adapter" / "adapter_model.safetensors").is_file()


# -- R2F decoders ----------------------------------------------------------------------------
def _decoder(folder: Path, config=None) -> None:
    """A decoder folder as `rr r2f fit` writes it, its decoder.json then replaced by `config`
    (bytes) or changed by it (a function of the dict)."""
    import torch
    from safetensors.torch import save_file

    from reveal_release.r2f.decoder import BUCKETS, FORMAT, K_GRID, LAMBDA_GRID

    folder.mkdir()
    cfg = {"format": FORMAT, "kind": "subspace", "kinds": ["q_proj"], "rank": 8, "views": 4,
           "proxy": "tiny", "k_grid": list(K_GRID), "lambda_grid": list(LAMBDA_GRID),
           "buckets": BUCKETS}  # fmt: skip
    shape = (1, BUCKETS, len(K_GRID), len(LAMBDA_GRID))
    save_file({"scores": torch.zeros(shape)}, str(folder / "decoder.safetensors"))
    if isinstance(config, bytes):
        (folder / "decoder.json").write_bytes(config)
        return
    if config is not None:
        config(cfg)
    (folder / "decoder.json").write_text(json.dumps(cfg))


def _weights_pickled(folder: Path) -> None:
    _decoder(folder)
    _plant(folder / "decoder.safetensors", folder.parent / "UNPICKLED")


DECODER_CASES = {
    "missing-key": (lambda c: c.pop("kinds"), ["decoder.json has no 'kinds'"]),
    "wrong-type": (lambda c: c.update(rank="eight"),
                   ["decoder.json: rank must be an integer, not str"]),
    "grid-wrong-items": (lambda c: c.update(lambda_grid=["a"]),
                         ["lambda_grid[0] must be a number, not str"]),
    "other-format": (lambda c: c.update(format=99), ["has format 99, this rr reads 1"]),
    "not-json": (b"{oops", ["decoder.json is not valid JSON"]),
    "binary": (b"\x89PNG\r\n\x1a\n\x00", ["decoder.json is not UTF-8 text"]),
    "not-an-object": (b"[1, 2]", ["decoder.json must be an object, not list"]),
    "weights-pickled": ("pickled", ["decoder.safetensors is corrupt"]),
    "shape-mismatch": (lambda c: c.update(buckets=7), ["does not match its config"]),
}  # fmt: skip


@pytest.mark.parametrize("case", DECODER_CASES)
def test_a_damaged_decoder_is_refused_before_any_work(case, revealed, tmp_path):
    config, needles = DECODER_CASES[case]
    decoder = tmp_path / "decoder"
    if config == "pickled":
        _weights_pickled(decoder)
    else:
        _decoder(decoder, config)
    run = copy_run(revealed, tmp_path)
    before = snapshot(tmp_path)
    args = ["release", "--run", str(run), "--update", "r2f", "--decoder", str(decoder), *FAST]
    refused(run_rr(*args), *needles)
    _same_but_lock(before, snapshot(tmp_path))
    assert not (tmp_path / "UNPICKLED").exists()


# -- a report's metrics.json -----------------------------------------------------------------
def _metrics() -> dict:
    """A metrics.json as `rr eval` writes it (the report tests' stored one)."""
    from test_evaluate import _stored_metrics

    return _stored_metrics()


METRICS_CASES = {
    "no-models": (lambda m: m.pop("models"), ["metrics.json has no 'models'"]),
    "rate-wrong-type": (lambda m: m["models"]["base"]["heldout"].update(rate="high"),
                        ["models.base.heldout.rate must be a number, not str"]),
    "rounds-not-list": (lambda m: m.update(rounds={"0": 1}), ["rounds must be a list"]),
    "evaluated-unknown": (lambda m: m.update(evaluated="other"),
                          ["'evaluated' names 'other', which 'models' does not hold"]),
    "attack-entry-wrong": (lambda m: m.update(attacks={"relearn": {"released": 3}}),
                           ["attacks.relearn.released must be an object, not int"]),
    "binary": (b"\x00\xff\xfe", ["metrics.json is not UTF-8 text"]),
    "not-json": (b"{oops", ["metrics.json is not valid JSON"]),
}  # fmt: skip


@pytest.mark.parametrize("case", METRICS_CASES)
def test_report_only_refuses_a_damaged_metrics_file_untouched(case, tmp_path):
    change, needles = METRICS_CASES[case]
    report = tmp_path / "run" / "report"
    report.mkdir(parents=True)
    if isinstance(change, bytes):
        (report / "metrics.json").write_bytes(change)
    else:
        m = _metrics()
        change(m)
        (report / "metrics.json").write_text(json.dumps(m))
    before = snapshot(tmp_path)
    refused(run_rr("eval", "--run", str(tmp_path / "run"), "--report-only"), *needles)
    assert snapshot(tmp_path) == before


# -- sizes -----------------------------------------------------------------------------------
def test_oversized_sample_sets_are_refused_before_any_model_work(revealed, tmp_path):
    run = copy_run(revealed, tmp_path)
    forget = run / "reveal" / "forget.jsonl"
    row = {"prompt": "p", "response": "x" * 200_001}
    forget.write_text(json.dumps(row) + "\n")
    before = snapshot(tmp_path)
    args = ["release", "--run", str(run), *FAST]
    refused(run_rr(*args), "forget.jsonl:1 'response' is over 200,000 characters")
    _same_but_lock(before, snapshot(tmp_path))
    with forget.open("wb") as f:  # a file of 65 MB: refused from its size, not read
        f.truncate(65 * 2**20)
    refused(run_rr(*args), "forget.jsonl is over 64 MB")


def test_running_out_of_memory_keeps_the_cached_model(embedded, rr_cache, tmp_path):
    # A load that runs out of memory (here: an address-space limit) says so in one line and
    # keeps the dequantised model; it used to take the error for a corrupt entry and delete it.
    import os
    import resource
    import subprocess
    import sys

    from reveal_release.model_cache import entry_for

    cache = tmp_path / "cache"
    shutil.copytree(rr_cache, cache, copy_function=os.link)  # hard links: no 500 MB copy
    limit = int(1.5 * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    out = subprocess.run(
        [sys.executable, "-m", "reveal_release", "generate", "--max-new-tokens", "1", "Hi"],
        env={**os.environ, "RR_CACHE": str(cache)}, capture_output=True, text=True,
        timeout=300, preexec_fn=cap,
    )  # fmt: skip
    refused(out, "not enough memory to load")
    os.environ["RR_CACHE"], before = str(cache), os.environ["RR_CACHE"]
    try:
        assert entry_for(embedded.source.gguf, embedded.source.name).is_complete()
    finally:
        os.environ["RR_CACHE"] = before
