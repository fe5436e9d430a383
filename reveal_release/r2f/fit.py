"""Build (sketches, true gradient) pairs on a model, fit the subspace decoder, measure cosines."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from reveal_release.errors import RRError
from reveal_release.models import LoadedModel
from reveal_release.r2f.decoder import (
    BUCKETS,
    K_GRID,
    LAMBDA_GRID,
    SubspaceDecoder,
    analytic,
    bucket,
    cosine,
    input_basis,
    subspace_solve,
)
from reveal_release.r2f.fit_config import check_range
from reveal_release.r2f.paraphrase import paraphrases
from reveal_release.r2f.sketch import Capture, Layer, capture, linear_layers, nll_loss, random_a
from reveal_release.train.data import collate, encode


@dataclass
class Example:
    """A batch of forget-style pairs seen through `views` prompts each."""

    responses: list[str]
    views: list[list[str]]  # views[v][i]: prompt i in view v


def make_examples(
    loaded: LoadedModel, prompts: Sequence[str], views: int, batch: int, seed: int,
    views_from: str = "paraphrases",
) -> list[Example]:  # fmt: skip
    """The model's own greedy answers to prompts, in batches, with paraphrased views (or, with
    views_from "projections", every view the prompts themselves: views differ by A alone, as
    `rr release --r2f-views projections` takes them)."""
    from reveal_release.generation import generate

    gens, _ = generate(loaded, list(prompts), max_new_tokens=48)
    answers = [g.text for g in gens]
    if views_from == "projections":
        per_prompt = [[p] * views for p in prompts]
    else:
        per_prompt = paraphrases(loaded, prompts, views, seed)
    out = []
    for lo in range(0, len(prompts) - batch + 1, batch):
        rows = per_prompt[lo : lo + batch]
        out.append(Example(answers[lo : lo + batch], [[r[v] for r in rows] for v in range(views)]))
    return out


@dataclass
class Pair:
    """One example's per-layer views (sketches, A's), input basis and true gradient."""

    sketches: dict[str, list[Any]]
    a_mats: dict[str, list[Any]]
    bases: dict[str, Any]
    true: dict[str, Any]


def gradient_pair(
    loaded: LoadedModel, layers: Sequence[Layer], ex: Example, rank: int, seed: int
) -> Pair:
    """Sketches of every view (fresh A each) and the true gradient of view 0's loss."""
    cap = Capture()
    a_all: dict[str, list[Any]] = defaultdict(list)
    for v, prompts in enumerate(ex.views):
        a = random_a(layers, rank, seed * 1000 + v)
        for name, mat in a.items():
            a_all[name].append(mat)
        batch = collate(
            [
                encode(loaded.tokenizer, p, r, 160)
                for p, r in zip(prompts, ex.responses, strict=True)
            ],
            loaded.tokenizer.pad_token_id,
            loaded.device,
        )
        capture(loaded.model, layers, nll_loss(batch), a, cap, want_true=v == 0, keep_inputs=4096)
    bases = {ly.name: input_basis(cap.inputs[ly.name]) for ly in layers}
    return Pair(cap.sketches, dict(a_all), bases, cap.true)


def score_pair(pair: Pair, layers: Sequence[Layer], kinds: Sequence[str]) -> tuple[Any, dict]:
    """Cosine of every (k, lambda) decoding and of the analytic one, per layer."""
    import torch

    grid = torch.zeros(len(kinds), BUCKETS, len(K_GRID), len(LAMBDA_GRID))
    count = torch.zeros(len(kinds), BUCKETS, 1, 1)
    per_layer = {}
    for ly in layers:
        g, u = pair.true[ly.name], pair.bases[ly.name]
        s = pair.sketches[ly.name]
        a = [x.to(u.device) for x in pair.a_mats[ly.name]]  # once, not in every (k, lambda)
        gu, gnorm = g @ u, float(g.norm())
        ki, bi = kinds.index(ly.kind), bucket(ly.depth)
        for i, k in enumerate(K_GRID):
            for j, lam in enumerate(LAMBDA_GRID):
                m = subspace_solve(s, a, u, k, lam)
                kk = m.shape[1]
                den = float(m.norm()) * gnorm
                grid[ki, bi, i, j] += float((m * gu[:, :kk]).sum()) / den if den else 0.0
        count[ki, bi] += 1
        per_layer[ly.name] = cosine(analytic(s, a), g)
    return grid / count.clamp(min=1), per_layer


def fit_decoder(
    loaded: LoadedModel,
    prompts: Sequence[str],
    kinds: Sequence[str],
    views: int,
    rank: int,
    batch: int = 4,
    held_out: int = 2,
    seed: int = 0,
    on_pair: Callable[[int, int], None] | None = None,
) -> tuple[SubspaceDecoder, dict[str, Any]]:
    """Fit (k, lambda) per kind and depth on all but `held_out` batches; cosines on the rest."""
    import torch

    check_range(views, rank)
    layers = linear_layers(loaded.model, kinds)
    examples = make_examples(loaded, prompts, views, batch, seed)
    if len(examples) <= held_out:
        raise RRError(
            f"{len(prompts)} prompts make {len(examples)} batches of {batch}: "
            f"need more than {held_out} (held out)"
        )
    train, test = examples[: len(examples) - held_out], examples[len(examples) - held_out :]
    total = torch.zeros(len(kinds), BUCKETS, len(K_GRID), len(LAMBDA_GRID))
    for i, ex in enumerate(train):
        grid, _ = score_pair(gradient_pair(loaded, layers, ex, rank, seed + i), layers, kinds)
        total += grid
        if on_pair:
            on_pair(i + 1, len(examples))
    present = sorted({ly.kind for ly in layers}, key=list(kinds).index)
    dec = SubspaceDecoder(list(present), rank, views, loaded.source.spec, total / len(train))
    dec.scores = dec.scores[[list(kinds).index(k) for k in present]]
    figures = check_decoder(
        dec, loaded, layers, test, rank, seed + 10_000,
        on_pair=(lambda j, n: on_pair(len(train) + j, len(examples))) if on_pair else None,
    )  # fmt: skip
    return dec, figures


def check_decoder(
    dec: SubspaceDecoder,
    loaded: LoadedModel,
    layers: Sequence[Layer],
    examples: Sequence[Example],
    rank: int,
    seed: int,
    on_pair: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Held-out cosine(decoded, true) per layer kind: the fitted decoder against the analytic."""
    for ly in layers:
        dec.params(ly.kind, ly.depth)  # a layer kind it cannot decode: say which, before work
    learned: dict[str, list[float]] = defaultdict(list)
    base: dict[str, list[float]] = defaultdict(list)
    for i, ex in enumerate(examples):
        pair = gradient_pair(loaded, layers, ex, rank, seed + i)
        for ly in layers:
            s, a, u = pair.sketches[ly.name], pair.a_mats[ly.name], pair.bases[ly.name]
            g = pair.true[ly.name]
            learned[ly.kind].append(cosine(dec.decode(ly.kind, ly.depth, s, a, u), g))
            base[ly.kind].append(cosine(analytic(s, a), g))
        if on_pair:
            on_pair(i + 1, len(examples))

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    return {
        "cosine_learned": mean([c for v in learned.values() for c in v]),
        "cosine_analytic": mean([c for v in base.values() for c in v]),
        "layers": {
            k: {
                "cosine_learned": mean(learned[k]),
                "cosine_analytic": mean(base[k]),
                "n": len(learned[k]),
            }
            for k in learned
        },
        "held_out_batches": len(examples),
        "rank": rank,
        "views": len(examples[0].views) if examples else 0,
    }
