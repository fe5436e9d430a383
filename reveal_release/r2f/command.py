"""`rr r2f fit` and `rr r2f check`: fit a decoder on a proxy, measure it on a model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from reveal_release.errors import RRError
from reveal_release.r2f.fit_config import VIEW_SOURCES, FitConfig

FIT_POOLS = ("code.txt", "person.txt", "retain.txt")
CHECK_POOLS = ("heldout/code.txt", "heldout/person.txt")


def prompts_from(pools: tuple[str, ...], n: int) -> list[str]:
    """n prompts interleaved from instruction pools (topic pools need a subject: not used)."""
    from reveal_release.targets.spec import instructions_dir, read_pool

    lists = [read_pool(instructions_dir() / p, "", "r2f") for p in pools]
    out: list[str] = []
    for i in range(max(len(x) for x in lists)):
        out += [x[i] for x in lists if i < len(x)]
    if len(out) < n:
        raise RRError(f"the pools {', '.join(pools)} hold {len(out)} prompts, fewer than {n}")
    return out[:n]


def print_figures(title: str, fig: dict[str, Any], json_path: Path | None) -> None:
    """The per-layer-kind table, the means, and the JSON file when asked."""
    from reveal_release.atomic import atomic_write_json
    from reveal_release.console import say, table

    rows = [
        [k, f"{v['cosine_learned']:.3f}", f"{v['cosine_analytic']:.3f}", v["n"]]
        for k, v in fig["layers"].items()
    ]
    rows.append(["all", f"{fig['cosine_learned']:.3f}", f"{fig['cosine_analytic']:.3f}", ""])
    table(title, ["layer kind", "cosine learned", "cosine analytic", "layers x batches"], rows)
    if json_path is not None:
        atomic_write_json(json_path, fig)
        say(f"figures written to {json_path}")


def fit_command(
    *,
    proxy: str,
    out: Path,
    cfg: FitConfig,
    json_path: Path | None,
    trust_remote_code: bool,
    device: str = "auto",
) -> None:
    """Fit a decoder on the proxy and report its held-out cosines."""
    from reveal_release.atomic import new_folder
    from reveal_release.console import console, progress, say
    from reveal_release.models import load_model
    from reveal_release.r2f.fit import fit_decoder

    out = new_folder(out)  # before any work: nothing the user keeps there is replaced
    texts = prompts_from(FIT_POOLS, cfg.prompts)
    loaded = load_model(proxy, device=device, trust_remote_code=trust_remote_code, progress=True)
    say(f"fitting on {proxy}: {len(texts)} prompts, {cfg.views} views, rank {cfg.rank}")
    with progress() as bar:
        task = bar.add_task("gradient pairs", total=None)
        dec, fig = fit_decoder(
            loaded, texts, list(cfg.layers), cfg.views, cfg.rank, seed=cfg.seed,
            on_pair=lambda i, n: bar.update(task, completed=i, total=n),
        )  # fmt: skip
    dec.extra["fit"] = {k: v for k, v in fig.items() if k != "layers"}
    dec.save(out)
    print_figures(f"r2f fit on {proxy} (held-out batches)", fig, json_path)
    console.print(f"decoder saved to {out}")


def check_command(
    *, decoder: Path, model: str, prompts: int, json_path: Path | None, seed: int,
    trust_remote_code: bool, device: str = "auto", views_from: str = "paraphrases",
) -> None:  # fmt: skip
    """Held-out cosine of a saved decoder on another model, against the analytic baseline."""
    from reveal_release.console import progress
    from reveal_release.models import load_model
    from reveal_release.r2f.decoder import load_decoder
    from reveal_release.r2f.fit import make_examples
    from reveal_release.r2f.sketch import linear_layers

    if views_from not in VIEW_SOURCES:
        raise RRError(f"--views-from takes {' or '.join(VIEW_SOURCES)}, not {views_from!r}")

    dec = load_decoder(decoder)
    texts = prompts_from(CHECK_POOLS, prompts)
    loaded = load_model(model, device=device, trust_remote_code=trust_remote_code, progress=True)
    kinds = sorted({n.rsplit(".", 1)[-1] for n, m in loaded.model.named_modules()
                    if type(m).__name__ == "Linear" and ".layers." in n})  # fmt: skip
    layers = linear_layers(loaded.model, kinds)
    for ly in layers:
        dec.params(ly.kind, ly.depth)  # one line naming a kind the decoder cannot map
    from reveal_release.r2f.fit import check_decoder

    examples = make_examples(loaded, texts, dec.views, 4, seed, views_from)
    with progress() as bar:
        task = bar.add_task("gradient pairs", total=len(examples))
        fig = check_decoder(
            dec, loaded, layers, examples, dec.rank, seed + 20_000,
            on_pair=lambda i, n: bar.update(task, completed=i),
        )  # fmt: skip
    fig["decoder_proxy"], fig["views_from"] = dec.proxy, views_from
    print_figures(f"r2f check: decoder from {dec.proxy} on {model}", fig, json_path)


def dump(obj: Any) -> str:
    """JSON text (for tests and logs)."""
    return json.dumps(obj, indent=2)
