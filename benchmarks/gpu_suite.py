"""The GPU suite: one command, one JSON and one table, for a machine with one CUDA GPU.

    python3 benchmarks/gpu_suite.py --out OUT                 # on the GPU machine (under 8 min)
    .venv/bin/python benchmarks/gpu_suite.py --out OUT --dry-run    # tiny shapes on the CPU (CI)
    .venv/bin/python benchmarks/gpu_suite.py --prepare RUN --decoder DEC   # rebuild the inputs

(a) Cost of one update at 1B, 3B and 8B (random-init Llama shapes, bf16, a forget and a retain
    batch of 4 x 256 tokens): full AdamW, LoRA and R2F, time and peak GPU memory
    (`benchmarks/r2f_update_cost.py`, each in its own process).
(b) Sampling throughput at 1B: HF one prompt at a time, HF batched (`generate`), and the
    project's sampler (HFSampler); new tokens per second.
(c) One whole release round at 1B (`rr release --rounds 1` in this process, `--device cuda`) on
    the forget and retain sets of a run of the embedded model, with its time by stage.

Its inputs travel with the source tree (`benchmarks/gpu_inputs/`: the embedded model's tokenizer,
a code run's forget and retain sets, an R2F decoder fitted on the embedded model), since the GPU
machine has no network and no package index; it needs torch, transformers, peft, typer and rich
there, and runs the package from the source tree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the package from the source tree, installed or not
sys.path.insert(0, str(HERE))

INPUTS = HERE / "gpu_inputs"
PROMPTS = [
    "Write a Python function that reverses a string.",
    "How do I read a CSV file with pandas?",
    "Write a SQL query that counts the rows of a table called users.",
    "Explain what a Python list comprehension is, with an example.",
    "What is the capital of France?",
    "Give me one tip for sleeping better.",
    "Explain photosynthesis in two sentences.",
    "Write a haiku about autumn.",
] * 2
FULL = {"device": "cuda", "sizes": ["llama-1b", "llama-3b", "llama-8b"], "one": "llama-1b",
        "tokens": 256, "repeats": 2, "new_tokens": 64, "steps": 8, "release": {}}  # fmt: skip
DRY = {"device": "cpu", "sizes": ["llama-tiny"], "one": "llama-tiny", "tokens": 16, "repeats": 1,
       "new_tokens": 8, "steps": 2,
       "release": {"probe_limit": 3, "qa_limit": 4, "batch_size": 2}}  # fmt: skip


def prepare(run: Path, decoder: Path, dest: Path = INPUTS) -> None:
    """Write the suite's inputs: the tokenizer, RUN's forget and retain sets, the decoder."""
    from reveal_release.models import load_model

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    load_model("smollm2-135m").tokenizer.save_pretrained(dest / "tokenizer")
    for name in ("forget.jsonl", "retain.jsonl"):
        shutil.copy(run / "reveal" / name, dest / name)
    shutil.copytree(decoder, dest / "decoder")
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    if size > 32 * 2**20:
        raise SystemExit(f"the inputs take {size / 2**20:.1f} MiB: more than they should carry")
    print(f"wrote {dest} ({size / 2**20:.1f} MiB)")


def update_cost(inputs: Path, out: Path, p: dict) -> list[dict]:
    """(a): r2f_update_cost.py on the suite's sizes; its rows."""
    path = out / "update_cost.json"
    cmd = [sys.executable, str(HERE / "r2f_update_cost.py"), "--decoder", str(inputs / "decoder"),
           "--device", p["device"], "--tokens", str(p["tokens"]), "--repeats", str(p["repeats"]),
           "--tokenizer", str(inputs / "tokenizer"), "--models", ",".join(p["sizes"]),
           "--methods", "full,lora,r2f", "--json", str(path), "--timeout", "240"]  # fmt: skip
    subprocess.run(cmd, check=True)
    return json.loads(path.read_text())["results"]


def _synced(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def sampling(inputs: Path, p: dict) -> list[dict]:
    """(b): new tokens per second, three ways, on one random-init model (greedy; a random model
    never ends an answer, so every answer is the full length)."""
    from r2f_update_cost import build

    from reveal_release.generation import chat_text
    from reveal_release.models import LoadedModel, prepare_tokenizer, stop_token_ids
    from reveal_release.reveal.samplers.base import SamplingConfig
    from reveal_release.reveal.samplers.hf import HFSampler

    model, tok = build(p["one"], p["device"], str(inputs / "tokenizer"))
    model.eval()
    tok = prepare_tokenizer(tok)
    n, rows = p["new_tokens"], []
    chats = [chat_text(tok, q) for q in PROMPTS]
    gen = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False,
           "pad_token_id": tok.pad_token_id}  # fmt: skip

    def hf(batch: list[str]) -> int:
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        return int(model.generate(**enc, **gen)[:, enc["input_ids"].shape[1] :].numel())

    def timed(label: str, fn: object) -> None:
        _synced(p["device"])
        t = time.perf_counter()
        tokens = fn()  # type: ignore[operator]
        _synced(p["device"])
        rows.append({"sampler": label, "tokens": tokens,
                     "tok_per_s": tokens / (time.perf_counter() - t)})  # fmt: skip

    hf(chats[:2])  # warm-up
    timed("HF one at a time", lambda: sum(hf([c]) for c in chats))
    timed("HF batched", lambda: hf(chats))
    loaded = LoadedModel(model=model, tokenizer=tok, source=None, folder=Path("."),
                         fingerprint="", load_seconds=0.0,
                         stop_token_ids=stop_token_ids(tok))  # type: ignore[arg-type]  # fmt: skip
    cfg = SamplingConfig(max_new_tokens=n, temperature=0.0, batch_size=len(PROMPTS))
    timed("rr HFSampler", lambda: HFSampler(loaded).generate(PROMPTS, cfg)[1].new_tokens)
    return rows


def release_round(inputs: Path, out: Path, p: dict) -> dict:
    """(c): a run folder around the suite's sets and a random-init model, one `rr release`
    round on it in this process; the round's time by stage and its figures."""
    from r2f_update_cost import build

    from reveal_release.models import folder_fingerprint
    from reveal_release.release.command import release_command
    from reveal_release.release.config import ReleaseConfig
    from reveal_release.runs import RunDir
    from reveal_release.stage_clock import StageClock

    model, tok = build(p["one"], p["device"], str(inputs / "tokenizer"))
    folder = out / "model"
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    del model
    run = out / "run"
    rd = RunDir.open(run, {"model": folder_fingerprint(folder), "target": "code"})
    with rd.stage("reveal", {"model": str(folder), "target": "code", "backend": "hf"}) as st:
        rd.path("reveal").mkdir(parents=True, exist_ok=True)
        for name in ("forget.jsonl", "retain.jsonl"):
            shutil.copy(inputs / name, rd.path("reveal", name))
        st.info.update(forget=len(rd.forget_set()), retain=len(rd.retain_set()))
    clock = StageClock()
    cfg = ReleaseConfig(rounds=1, steps=p["steps"], **p["release"])
    given = frozenset({"rounds", "steps", *p["release"]})  # over the target spec's settings
    release_command(run=run, cfg=cfg, backend="hf", trust_remote_code=False,
                    device=p["device"], explicit=given, clock=clock)  # fmt: skip
    metrics = json.loads((run / "round-1" / "metrics.json").read_text())
    keep = ("train_seconds", "round_seconds", "train_steps", "forget_size", "peak_rss_bytes")
    return {
        "stages": [[name, s] for name, s in clock.totals()],
        **{k: metrics.get(k) for k in keep},
    }


def table(result: dict) -> str:
    """The suite's figures as Markdown."""
    lines = ["| model | method | s / update | peak GiB |", "|---|---|---|---|"]
    for r in result["update_cost"]:
        peak = r.get("peak_bytes")
        cell = "-" if peak is None else f"{peak / 2**30:.1f}"
        lines.append(f"| {r['model']} | {r['method']} | {r['s_per_update']:.3f} | {cell} |")
    lines += ["", "| sampler | new tokens / s |", "|---|---|"]
    lines += [f"| {r['sampler']} | {r['tok_per_s']:.1f} |" for r in result["sampling"]]
    lines += ["", "| release round stage | s |", "|---|---|"]
    lines += [f"| {name} | {s:.1f} |" for name, s in result["release_round"]["stages"]]
    return "\n".join(lines)


def main() -> None:
    """Run (a), (b) and (c), write OUT/suite.json and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="a new folder for the results")
    ap.add_argument("--inputs", type=Path, default=INPUTS)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU")
    ap.add_argument("--prepare", type=Path, help="a run folder after rr reveal (rebuilds inputs)")
    ap.add_argument("--decoder", type=Path, help="with --prepare: a fitted decoder folder")
    a = ap.parse_args()
    if a.prepare:
        prepare(a.prepare, a.decoder)
        return
    if a.out is None:
        ap.error("--out is required")
    a.out.mkdir(parents=True, exist_ok=False)
    p = DRY if a.dry_run else FULL
    t = time.perf_counter()
    result = {"device": p["device"], "update_cost": update_cost(a.inputs, a.out, p)}
    result["sampling"] = sampling(a.inputs, p)
    result["release_round"] = release_round(a.inputs, a.out, p)
    result["seconds"] = time.perf_counter() - t
    (a.out / "suite.json").write_text(json.dumps(result, indent=1))
    print(table(result))
    print(f"\nsuite: {result['seconds']:.0f} s; {a.out / 'suite.json'}")


if __name__ == "__main__":
    main()
