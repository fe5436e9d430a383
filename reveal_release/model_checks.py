"""`rr models` and `rr generate`: the quick checks that a model loads and answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reveal_release.console import console, human_bytes, peak_rss_bytes, progress, table
from reveal_release.embedded_models import DEFAULT_MODEL, EMBEDDED


@dataclass
class ModelListing:
    """One row of `rr models`."""

    name: str
    kind: str
    embedded: bool
    installed: bool
    cached: bool
    size_bytes: int | None
    where: str


def available_models() -> list[ModelListing]:
    """Embedded aliases (installed or not) and every model in the cache."""
    from reveal_release.model_cache import list_entries

    rows: list[ModelListing] = []
    cached = list_entries()
    for alias, emb in EMBEDDED.items():
        hit = [(p, m) for p, m in cached if m.get("name") == alias]
        installed = emb.installed()
        rows.append(
            ModelListing(
                name=alias + (" (default)" if alias == DEFAULT_MODEL else ""),
                kind=emb.description,
                embedded=True,
                installed=installed,
                cached=bool(hit),
                size_bytes=_dir_size(hit[0][0]) if hit else None,
                where=str(hit[0][0]) if hit else ("not cached yet" if installed else emb.install),
            )
        )
    for path, meta in cached:
        if meta.get("name") in EMBEDDED:
            continue
        rows.append(
            ModelListing(
                name=meta.get("source", path.name),
                kind="GGUF, dequantised",
                embedded=False,
                installed=True,
                cached=True,
                size_bytes=_dir_size(path),
                where=str(path),
            )
        )
    return rows


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def print_models() -> None:
    """The `rr models` table."""
    rows = [
        (
            m.name + (" *" if m.embedded else ""),
            m.kind,
            m.cached,
            human_bytes(m.size_bytes),
            m.where if m.installed else f"not installed: {m.where}",
        )
        for m in available_models()
    ]
    table("Models (* embedded)", ["name", "what", "cached", "size", "where"], rows)
    console.print("Any local transformers folder, .gguf file or hub id (org/name) loads too.")


GENERATE_COLUMNS = [
    "model", "device", "load s", "cache", "prompts", "new tokens", "s", "tokens/s", "peak RSS",
]  # fmt: skip


def generate_command(
    prompts: Sequence[str], *, model: str, max_new_tokens: int, batch_size: int,
    temperature: float, seed: int, trust_remote_code: bool, device: str = "auto",
) -> None:  # fmt: skip
    """Load a model, answer the prompts in batches, print the answers and tokens/s."""
    from reveal_release.generation import generate
    from reveal_release.models import load_model

    loaded = load_model(model, device=device, trust_remote_code=trust_remote_code, progress=True)
    with progress() as bar:
        task = bar.add_task("generating", total=len(prompts))
        gens, stats = generate(
            loaded, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
            temperature=temperature, seed=seed, on_batch=lambda n: bar.advance(task, n),
        )  # fmt: skip
    for g in gens:
        console.print(f"[bold]> {g.prompt}[/bold]", highlight=False)
        console.print(g.text or "[dim](empty answer)[/dim]", highlight=False, markup=False)
        console.print()
    cache = "built now" if loaded.built_cache else ("hit" if loaded.source.gguf else "-")
    row = (
        loaded.source.spec, str(loaded.device), loaded.load_seconds, cache, stats.prompts,
        stats.new_tokens, stats.seconds, stats.tokens_per_s, human_bytes(peak_rss_bytes()),
    )  # fmt: skip
    table("generate", GENERATE_COLUMNS, [row])
