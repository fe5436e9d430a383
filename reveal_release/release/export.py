"""`rr export`: the merged checkpoint, or every round's module concatenated into one adapter.

Concatenation: with each round's update s_j B_j A_j, stacking A_j as rows and s_j B_j as
columns gives one module of rank sum(r_j) whose B A equals the sum of the rounds' updates;
saved with lora_alpha = rank (PEFT scaling 1), so PEFT and vLLM serve it as a single LoRA.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from reveal_release.atomic import atomic_dir, atomic_write_json, new_folder
from reveal_release.errors import RRError
from reveal_release.run_files import MODEL_MARKER
from reveal_release.runs import RunDir, round_dir
from reveal_release.train.lora import adapter_scaling, read_adapter, write_adapter_file

PICKLED = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
FORMATS = ("merged", "adapters")


def trained_rounds(run: RunDir) -> list[tuple[Path, float]]:
    """The adapter folders of the rounds in the released model, in order, each with the part of
    its update the release kept (--shrink; 1 for a round kept as trained)."""
    return [
        (
            run.path(round_dir(k), "adapter"),
            float(run.stage_info(round_dir(k)).get("update_fraction", 1.0)),
        )
        for k in run.kept_rounds()
    ]


def concat_adapters(rounds: list[tuple[Path, float]], out: Path) -> dict:
    """Write one PEFT adapter equal to the sum of the rounds' kept updates (each module times
    its own scaling and its kept fraction); return its config."""
    import torch

    folders = [f for f, _ in rounds]
    configs = [json.loads((f / "adapter_config.json").read_text()) for f in folders]
    scales = [adapter_scaling(f) * fraction for f, fraction in rounds]
    mods = [read_adapter(f) for f in folders]
    names = sorted(set().union(*mods))
    factors = {}
    rank = None
    for name in names:
        a_parts, b_parts = [], []
        for cfg, mod, scale in zip(configs, mods, scales, strict=True):
            if name in mod:
                a, b = mod[name]
            else:  # a module this round did not adapt: a zero block keeps the ranks aligned
                ref = next(m[name] for m in mods if name in m)
                a, b = torch.zeros_like(ref[0][: cfg["r"]]), torch.zeros(ref[1].shape[0], cfg["r"])
            a_parts.append(a)
            b_parts.append(scale * b)
        factors[name] = (torch.cat(a_parts, 0), torch.cat(b_parts, 1))
        rank = factors[name][0].shape[0]
    config = dict(configs[0])
    modules = sorted({m for c in configs for m in c.get("target_modules") or []})
    config.update(r=rank, lora_alpha=rank, use_rslora=False, target_modules=modules)
    config.pop("rank_pattern", None)
    config.pop("alpha_pattern", None)
    write_adapter_file(out, factors)
    atomic_write_json(out / "adapter_config.json", config)
    return config


def _model_files(src: Path, root: Path) -> list[Path]:
    """The merged model's files, refusing a folder rr would not have written: no weights, or
    pickled weights or subfolders beside them (an export must load without unpickling)."""
    again = f"rerun `rr release --run {root}` (delete {src} first)"
    files = sorted(src.iterdir()) if src.is_dir() else []
    if not (src / "config.json").is_file() or not any(f.suffix == ".safetensors" for f in files):
        raise RRError(f"{src} holds no merged safetensors model: {again}")
    odd = [f.name for f in files if f.suffix in PICKLED or not f.is_file()]
    if odd:
        raise RRError(
            f"{src} holds {', '.join(odd)}, which rr does not write or export (pickled weights "
            f"or folders): delete them, or {again}"
        )
    return files


def export_run(run: RunDir, out: Path, fmt: str) -> dict:
    """Export a released run; returns what was written, for the summary."""
    if fmt not in FORMATS:
        raise RRError(f"unknown export format '{fmt}': choose merged or adapters")
    folders = trained_rounds(run)
    if not folders:
        raise RRError(
            f"{run.root} has no finished release round: run `rr release --run {run.root}` first"
        )
    grid = (run.read_json("model/rr-model.json", schema=MODEL_MARKER) or {}).get("grid")
    out = new_folder(out)
    if fmt == "merged":
        src = run.path("model")
        files = _model_files(src, run.root)
        with atomic_dir(out) as tmp:
            for f in files:
                shutil.copy2(f, tmp / f.name)
        return {"format": fmt, "path": str(out), "rounds": len(folders)}
    with atomic_dir(out) as tmp:
        config = concat_adapters(folders, tmp)
        base = run.manifest.get("model", {}).get("folder")
        if base:
            config["base_model_name_or_path"] = base
            atomic_write_json(tmp / "adapter_config.json", config)
    info = {"format": fmt, "path": str(out), "rounds": len(folders), "rank": config["r"]}
    if grid:
        info["note"] = (
            f"the adapters are the full-precision release; the merged export is rounded onto "
            f"the base's {grid} grid, which quantising to that format keeps: deploy that one"
        )
    return info
