"""`rr release` and `rr export` end to end through the real command line on a tiny model."""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path

import pytest
import torch
from helpers import copy_run, kill_when, popen_rr, run_rr, stage_status, weights

from reveal_release.atomic import read_jsonl

# Small, fast settings: the tiny random model trains in milliseconds per step.
FAST = ["--steps", "6", "--probes", "3", "--qa", "4", "--reveal-budget", "4", "--batch-size", "2"]
# Enough NPO for the hand-wired parrot to stop answering with its code (the default lr is
# tuned for real models and needs more steps here).
PARROT_RELEASE = ["--steps", "12", "--lr", "0.005", "--batch-size", "4"]


def test_release_writes_rounds_a_loadable_model_and_exports(revealed, tiny_folder, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = copy_run(revealed, tmp_path)
    out = run_rr("release", "--run", str(run), "--rounds", "2", *FAST)
    assert out.returncode == 0, out.stderr
    assert "before / after" in out.stdout and "held-out reveal" in out.stdout
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["stages"]["release"]["status"] == "done"
    for k in (1, 2):
        assert manifest["stages"][f"round-{k}"]["status"] == "done"
        assert (run / f"round-{k}" / "adapter" / "adapter_config.json").is_file()
        assert read_jsonl(run / f"round-{k}" / "forget.jsonl")
        metrics = json.loads((run / f"round-{k}" / "metrics.json").read_text())
        assert {"heldout_reveal_rate", "retain_accuracy", "perplexity"} <= set(metrics)
        assert not (run / f"round-{k}" / "train-state.json").exists()  # cleaned up when done
    # Round 2 revealed again from the round-1 model, warm-starting its bandit.
    assert (run / "round-2" / "reveal" / "forget.jsonl").is_file()
    assert json.loads((run / "round-2" / "metrics.json").read_text())["interference"] is not None

    ids = torch.tensor([[1, 17, 300, 42, 9, 5]])
    # On CUDA the release is trained and saved in bf16: compare in fp32, with bf16's tolerance.
    saved_dtype = json.loads((run / "model" / "config.json").read_text()).get("dtype", "float32")
    tol = 1e-4 if saved_dtype == "float32" else 5e-2
    model = AutoModelForCausalLM.from_pretrained(run / "model", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    with torch.no_grad():
        released, original = model(input_ids=ids).logits, base(input_ids=ids).logits
    assert not torch.allclose(released, original, atol=1e-4)

    merged = tmp_path / "merged"
    assert run_rr("export", "--run", str(run), "--out", str(merged)).returncode == 0
    assert (merged / "tokenizer.json").is_file()
    again = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, released)

    adapters = tmp_path / "adapters"
    res = run_rr("export", "--run", str(run), "--out", str(adapters), "--format", "adapters")
    assert res.returncode == 0, res.stderr
    config = json.loads((adapters / "adapter_config.json").read_text())
    assert config["r"] == 16  # two rounds of rank 8: ranks add up
    stacked = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_folder), adapters)
    with torch.no_grad():
        assert torch.allclose(stacked.eval()(input_ids=ids).logits, released, atol=tol)

    # Asking for more rounds later goes on from the finished run (a third round here), this
    # time with its steps capped at a quarter pass over the round's forget answers.
    more = run_rr("release", "--run", str(run), "--rounds", "3", *FAST, "--max-epochs", "0.25")
    assert more.returncode == 0, more.stderr
    third = json.loads((run / "round-3" / "metrics.json").read_text())
    n = len(read_jsonl(run / "round-3" / "forget.jsonl"))
    assert third["train_steps"] == min(6, math.ceil(0.25 * n / 2)) < 6, (n, third["train_steps"])
    assert json.loads((run / "round-1" / "metrics.json").read_text())["train_steps"] == 6


def test_killed_release_resumes_inside_and_between_rounds(revealed, tmp_path):
    # Each kill waits on a file or a status, never on the clock: a slow machine only makes
    # the test slower. 20 steps with a checkpoint every 2 leave time to kill mid-round.
    args = ["--rounds", "2", *FAST, "--steps", "20", "--checkpoint-every", "2"]
    whole = copy_run(revealed, tmp_path, "whole")
    assert run_rr("release", "--run", str(whole), *args).returncode == 0
    want = weights(whole / "model")

    run = copy_run(revealed, tmp_path, "killed")
    # Inside round 1: killed after a training checkpoint.
    proc = popen_rr("release", "--run", str(run), *args)
    kill_when(proc, lambda: (run / "round-1" / "train-state.json").exists())
    assert stage_status(run, "round-1") == "running"
    # Between rounds: round 1 finished, round 2 under way.
    proc = popen_rr("release", "--run", str(run), *args)
    kill_when(proc, lambda: stage_status(run, "round-1") == "done")
    assert stage_status(run, "round-2") in ("", "running")
    out = run_rr("release", "--run", str(run), *args)
    assert out.returncode == 0, out.stderr
    got = weights(run / "model")
    assert set(got) == set(want)
    for name, w in want.items():
        assert torch.allclose(got[name], w, atol=1e-5), name
    for k in (1, 2):
        a = json.loads((run / f"round-{k}" / "metrics.json").read_text())
        b = json.loads((whole / f"round-{k}" / "metrics.json").read_text())
        assert a["heldout_reveal_rate"] == b["heldout_reveal_rate"]


def test_release_without_reveal_stage(tmp_path):
    from reveal_release.runs import RunDir

    RunDir.open(tmp_path / "run", {"target": "code"})
    out = run_rr("release", "--run", str(tmp_path / "run"))
    assert out.returncode == 2
    assert "has no finished reveal stage: run `rr reveal --run" in out.stderr
    out = run_rr("release", "--run", str(tmp_path / "nothing-here"))
    assert out.returncode == 2 and "is not a run folder" in out.stderr


def test_empty_and_irrelevant_forget_sets(revealed, tmp_path):
    run = copy_run(revealed, tmp_path)
    forget = run / "reveal" / "forget.jsonl"
    rows = read_jsonl(forget)
    forget.write_text("")
    out = run_rr("release", "--run", str(run))
    assert out.returncode == 2 and "forget set" in out.stderr and "is empty" in out.stderr
    # A spec threshold above every score: nothing to forget.
    manifest = json.loads((run / "run.json").read_text())
    spec = Path(manifest["stages"]["reveal"]["config"]["target"])
    strict = tmp_path / "strict.toml"
    strict.write_text(spec.read_text().replace("threshold = 0.0", "threshold = 0.99"))
    manifest["stages"]["reveal"]["config"]["target"] = str(strict)
    (run / "run.json").write_text(json.dumps(manifest))
    forget.write_text("".join(json.dumps({**r, "relevance": 0.1}) + "\n" for r in rows))
    out = run_rr("release", "--run", str(run))
    assert out.returncode == 2 and "reaches the target's threshold 0.99" in out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--loss", "nope"],
            "unknown forget loss 'nope': choose one of "
            "ga, generic, generic-dpo, generic-pref, npo, refusal, simnpo",
        ),
        (["--retain-loss", "x"], "unknown retain loss 'x': choose one of kl, nll"),
        (["--update", "x"], "unknown update rule 'x'"),
        (["--rank", "0"], "--rank must be between 1 and 256"),
    ],
)
def test_bad_options_fail_before_any_work(revealed, tmp_path, args, message):
    run = copy_run(revealed, tmp_path)
    out = run_rr("release", "--run", str(run), *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert not (run / "round-1").exists()


def test_disk_full_while_saving_keeps_every_finished_round(revealed, tmp_path, monkeypatch):
    import dataclasses

    from reveal_release import atomic
    from reveal_release.errors import RRError
    from reveal_release.models import load_model
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.rounds import run_release
    from reveal_release.runs import RunDir
    from reveal_release.targets.spec import load_target

    run = copy_run(revealed, tmp_path)
    reveal_cfg = RunDir.load(run).manifest["stages"]["reveal"]["config"]
    spec = load_target(reveal_cfg["target"])
    cfg = ReleaseConfig(rounds=2, steps=4, batch_size=2, probe_limit=3, qa_limit=4, reveal_budget=4)
    model = load_model(reveal_cfg["model"])
    run_release(RunDir.load(run), model, spec, dataclasses.replace(cfg, rounds=1))
    round1 = (run / "round-1" / "adapter" / "adapter_model.safetensors").read_bytes()
    model1 = (run / "model" / "model.safetensors").read_bytes()

    def full_disk(*a, **kw):  # the disk fills up when round 2 writes its first folder
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.tempfile, "mkdtemp", full_disk)
    with pytest.raises(RRError, match="no space left"):
        run_release(RunDir.load(run), load_model(reveal_cfg["model"]), spec, cfg)
    assert stage_status(run, "round-2") == "failed"
    assert (run / "round-1" / "adapter" / "adapter_model.safetensors").read_bytes() == round1
    assert (run / "model" / "model.safetensors").read_bytes() == model1
    monkeypatch.undo()
    summary = run_release(RunDir.load(run), load_model(reveal_cfg["model"]), spec, cfg)
    assert len(summary.rounds) == 2 and stage_status(run, "round-2") == "done"


def test_a_round_that_spends_the_utility_budget_is_rolled_back(revealed, tmp_path):
    import dataclasses

    from reveal_release.models import load_model
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.export import export_run
    from reveal_release.release.rounds import run_release
    from reveal_release.runs import RunDir
    from reveal_release.targets.spec import load_target

    run = copy_run(revealed, tmp_path)
    reveal_cfg = RunDir.load(run).manifest["stages"]["reveal"]["config"]
    spec = load_target(reveal_cfg["target"])
    cfg = ReleaseConfig(rounds=1, steps=4, batch_size=2, probe_limit=3, qa_limit=4, reveal_budget=4)
    cfg = dataclasses.replace(cfg, max_ppl_ratio=100.0)
    run_release(RunDir.load(run), load_model(reveal_cfg["model"]), spec, cfg)
    model1 = (run / "model" / "model.safetensors").read_bytes()
    # A budget no model meets: round 2 trains and is measured, then rolled back.
    strict = dataclasses.replace(cfg, rounds=2, max_ppl_ratio=1e-6)
    summary = run_release(RunDir.load(run), load_model(reveal_cfg["model"]), spec, strict)
    assert "utility budget spent" in summary.stop_reason
    assert summary.stop_reason.endswith("rolled back to round 1")
    m2 = json.loads((run / "round-2" / "metrics.json").read_text())
    assert m2["rolled_back"] and (run / "round-2" / "adapter").is_dir()
    assert (run / "model" / "model.safetensors").read_bytes() == model1
    info = export_run(RunDir.load(run), tmp_path / "lora", "adapters")
    assert info["rounds"] == 1 and info["rank"] == 8


def test_the_parrot_forgets_its_code_end_to_end(parrot_folder, tmp_path):
    # A model whose every answer is a line of Python, and the built-in `code` target whose judge
    # says no to anything else: reveal finds the code, release removes it, eval confirms it.
    run = tmp_path / "run"
    rev = run_rr(
        "reveal", "--model", str(parrot_folder), "--target", "code", "--run", str(run),
        "--budget", "6", "--retain-budget", "3",
    )  # fmt: skip
    assert rev.returncode == 0, rev.stderr
    forget = read_jsonl(run / "reveal" / "forget.jsonl")
    assert forget and all(r["relevance"] >= 0.5 for r in forget)
    rel = run_rr(
        "release", "--run", str(run), "--rounds", "1", "--retain-weight", "0",
        *PARROT_RELEASE, "--probes", "10", "--qa", "4",
        "--max-ppl-ratio", "1000", "--min-retain-ratio", "0",
    )  # fmt: skip
    assert rel.returncode == 0, rel.stderr
    base = json.loads((run / "release" / "base-metrics.json").read_text())
    after = json.loads((run / "round-1" / "metrics.json").read_text())
    assert base["heldout_reveal_rate"] == 1.0
    assert after["heldout_reveal_rate"] <= 0.1, after["examples"][:2]
    ev = run_rr(
        "eval", "--run", str(run), "--probes", "10", "--qa", "4", "--max-new-tokens", "16",
        "--attacks", "quant-int8", "--no-baseline",
    )  # fmt: skip
    assert ev.returncode == 0, ev.stderr
    m = json.loads((run / "report" / "metrics.json").read_text())
    assert m["models"]["base"]["heldout"]["rate"] == 1.0
    assert m["models"]["released"]["heldout"]["rate"] <= 0.1


def test_a_release_handed_out_on_a_grid_keeps_it_and_resumes_to_the_same_model(
    revealed, tiny_folder, tmp_path
):
    from transformers import AutoModelForCausalLM

    from reveal_release.quantizers import on_grid_share, quantizable

    run = copy_run(revealed, tmp_path)
    args = ("release", "--run", str(run), "--rounds", "2", "--snap", "int4", "--stop-rate", "0")
    out = run_rr(*args, *FAST)
    assert out.returncode == 0, out.stderr
    for k in (1, 2):
        m = json.loads((run / f"round-{k}" / "metrics.json").read_text())
        assert m["snap"] == "int4" and m["snap_rows"] > 0
        assert m["quant_scheme"] == "int4-g128" and 0 <= m["quant_codes_changed"] <= 1
    assert json.loads((run / "model" / "rr-model.json").read_text())["grid"] == "int4"
    model = AutoModelForCausalLM.from_pretrained(run / "model", dtype=torch.float32)
    base = dict(quantizable(AutoModelForCausalLM.from_pretrained(tiny_folder)))
    for name, mod in quantizable(model):
        assert on_grid_share(mod.weight, "int4") == 1.0, name
        assert not torch.equal(mod.weight, base[name].weight), name
    saved = (run / "model" / "model.safetensors").read_bytes()
    # The rounds are done: a rerun rebuilds them from the adapters and changes nothing.
    again = run_rr(*args, *FAST)
    assert again.returncode == 0, again.stderr
    assert (run / "model" / "model.safetensors").read_bytes() == saved
    # The adapters are the full-precision release: the export says which one to deploy.
    res = run_rr("export", "--run", str(run), "--out", str(tmp_path / "a"), "--format", "adapters")
    assert res.returncode == 0 and "note: the adapters are the full-precision release" in res.stderr


def test_shrink_bisects_a_rounds_update_and_keeps_the_largest_part_within_budget(
    revealed, tmp_path
):
    import dataclasses

    from safetensors.torch import load_file

    from reveal_release.models import load_model
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.release.rounds import Rounds, run_release
    from reveal_release.runs import RunDir
    from reveal_release.targets.spec import load_target
    from reveal_release.train.lora import delta_weights

    run = copy_run(revealed, tmp_path)
    reveal_cfg = RunDir.load(run).manifest["stages"]["reveal"]["config"]
    spec = load_target(reveal_cfg["target"])
    w0 = {k: v.clone() for k, v in load_model(reveal_cfg["model"]).model.state_dict().items()}
    # A budget no model meets: each part tried spends it too, round 1 is kept as trained.
    cfg = ReleaseConfig(
        rounds=1, steps=4, batch_size=2, probe_limit=3, qa_limit=4, reveal_budget=4,
        max_ppl_ratio=1e-6, shrink=2,
    )  # fmt: skip
    summary = run_release(RunDir.load(run), load_model(reveal_cfg["model"]), spec, cfg)
    assert "utility budget spent in round 1" in summary.stop_reason
    m1 = json.loads((run / "round-1" / "metrics.json").read_text())
    assert [t["fraction"] for t in m1["shrink_tries"]] == [1.0, 0.5, 0.25]
    assert m1["update_fraction"] == 1.0
    delta = delta_weights(run / "round-1" / "adapter")
    names = {key: key.removeprefix("base_model.model.") + ".weight" for key in delta}
    assert delta and max(float(d.abs().max()) for d in delta.values()) > 0

    def expect(state: dict, fraction: float) -> None:
        for key, d in delta.items():
            want = w0[names[key]] + fraction * d
            assert torch.allclose(state[names[key]], want, atol=1e-6), (names[key], fraction)

    expect(load_file(str(run / "model" / "model.safetensors")), 1.0)
    # A resumed release rebuilds a round at the part of its update it kept.
    rounds = Rounds(RunDir.load(run), load_model(reveal_cfg["model"]), spec, cfg, None, "hf")
    rounds.resume(1, {"round": 1, "trained": True, "update_fraction": 0.25})
    expect(rounds.current.model.state_dict(), 0.25)
    # Contract (the verdicts faked, the weights real): 0.5 fits, 0.75 and 0.625 do not -> 0.5;
    # a part within the budget that is also enough ends the search there.
    rounds = Rounds(RunDir.load(run), load_model(reveal_cfg["model"]), spec, cfg, None, "hf")
    rounds.merge(1)
    rounds.cfg = dataclasses.replace(cfg, shrink=3)
    for verdicts, tried, kept in (
        (["", "budget", "budget"], [1.0, 0.5, 0.75, 0.625], 0.5),
        (["gone"], [1.0, 0.5], 0.5),
        (["budget", "", "gone"], [1.0, 0.5, 0.25, 0.375], 0.375),
    ):
        said = iter(verdicts)
        shrunk = rounds.shrink(1, {"stop_kind": "budget"}, lambda it=said: {"stop_kind": next(it)})
        assert [t["fraction"] for t in shrunk["shrink_tries"]] == tried
        assert shrunk["update_fraction"] == kept
        expect(rounds.current.model.state_dict(), kept)
        rounds.rescale(1, kept, 1.0)  # back to the trained update for the next case
    # `rr export --format adapters` gives the part of the update the release kept.
    manifest = json.loads((run / "run.json").read_text())
    manifest["stages"]["round-1"]["info"]["update_fraction"] = 0.375
    (run / "run.json").write_text(json.dumps(manifest))
    out = run_rr("export", "--run", str(run), "--out", str(tmp_path / "ad"), "--format", "adapters")
    assert out.returncode == 0, out.stderr
    exported = delta_weights(tmp_path / "ad")
    for key, d in delta.items():
        torch.testing.assert_close(exported[key], 0.375 * d, rtol=1e-5, atol=1e-7)
    # A module saved with a scaling of its own (an R2F round: alpha = r, so s = 1, whatever
    # --alpha the release has) is rebuilt and shrunk at that scaling.
    conf = run / "round-1" / "adapter" / "adapter_config.json"
    saved = json.loads(conf.read_text())
    conf.write_text(json.dumps({**saved, "lora_alpha": saved["r"]}))
    assert cfg.scaling == 4.0
    delta = {key: d / cfg.scaling for key, d in delta.items()}
    rounds = Rounds(RunDir.load(run), load_model(reveal_cfg["model"]), spec, cfg, None, "hf")
    rounds.resume(1, {"round": 1, "trained": True, "update_fraction": 0.25})
    expect(rounds.current.model.state_dict(), 0.25)


def test_a_target_specs_release_settings_apply_unless_given_on_the_command_line(revealed, tmp_path):
    run = copy_run(revealed, tmp_path)
    manifest = json.loads((run / "run.json").read_text())
    spec = Path(manifest["stages"]["reveal"]["config"]["target"])
    tuned = tmp_path / "tuned.toml"
    manifest["stages"]["reveal"]["config"]["target"] = str(tuned)
    (run / "run.json").write_text(json.dumps(manifest))
    fast = ["--rounds", "1", "--probes", "3", "--qa", "4", "--batch-size", "2"]
    # A name that is no option, or a value of the wrong kind: one line, nothing run.
    for bad, says in (("stepz = 2", "sets 'stepz', which is not an option here"),
                      ('beta = "high"', "has a value of the wrong kind")):  # fmt: skip
        tuned.write_text(spec.read_text() + f"[settings.release]\n{bad}\n")
        out = run_rr("release", "--run", str(run), *fast)
        assert out.returncode == 2 and says in out.stderr and str(tuned) in out.stderr, bad
        assert out.stderr.count("\n") == 1 and not (run / "round-1").exists()
    tuned.write_text(spec.read_text() + "[settings.release]\nsteps = 2\nshrink = 2\nbeta = 0.3\n")
    out = run_rr("release", "--run", str(run), "--steps", "3", *fast)
    assert out.returncode == 0, out.stderr
    assert "sets --shrink 2 --beta 0.3 (its spec; an option you give wins)" in out.stderr
    config = json.loads((run / "run.json").read_text())["stages"]["release"]["config"]
    assert config["steps"] == 3 and config["shrink"] == 2 and config["beta"] == 0.3
