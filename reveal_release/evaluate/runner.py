"""`rr eval`: forget efficacy, utility and attacks for the base and released models, cached."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from reveal_release.evaluate.attacks import ATTACKS, AttackContext, AttackSkipped
from reveal_release.evaluate.inputs import EvalInputs
from reveal_release.evaluate.settings import ALL_ATTACKS, EvalSettings
from reveal_release.metrics.figure_cache import MetricCache, NotCached, signature
from reveal_release.metrics.model_figures import (
    FigureStore,
    heldout_figures,
    heldout_key,
    model_key,
    utility_figures,
    utility_key,
)
from reveal_release.models import LoadedModel

Report = Callable[[str], None]


def _model_metrics(
    key: str,
    loaded: LoadedModel,
    inp: EvalInputs,
    judge: Any,
    probes: list[str],
    s: EvalSettings,
    cache: MetricCache,
    store: FigureStore,
    say: Report,
) -> dict[str, Any]:
    """Held-out reveal rate, target knowledge QA, utility and fluency of one model."""
    from reveal_release.metrics.knowledge import topic_qa_items
    from reveal_release.metrics.qa import qa_accuracy, retain_items

    fp = model_key(loaded)
    gen = signature([s.max_new_tokens, s.probe_limit, s.qa_limit])
    out: dict[str, Any] = {"fingerprint": loaded.fingerprint, "label": inp.labels.get(key, key)}

    def heldout() -> dict[str, Any]:
        say(f"{key}: held-out probes ({len(probes)})")
        return heldout_figures(loaded, inp.spec, judge, probes, s.max_new_tokens)

    out["heldout"] = store.get(fp, heldout_key(s.max_new_tokens), heldout)
    items, why = topic_qa_items(inp.spec)

    def knowledge() -> dict[str, Any]:
        say(f"{key}: knowledge questions ({len(items)})")
        r = qa_accuracy(loaded, items)
        return {"accuracy": r.accuracy, "n": r.total, "rows": r.rows}

    qa_sig = signature([[i.question, list(i.answers)] for i in items])
    out["knowledge"] = (
        cache.get(f"{fp}|knowledge|{qa_sig}", knowledge) if items else {"skipped": why}
    )

    qa_items, left_out = retain_items(inp.spec.tags(), s.qa_limit)

    def utility() -> dict[str, Any]:
        say(f"{key}: utility (general QA, perplexity)")
        return utility_figures(loaded, qa_items, left_out)

    questions = [it.question for it in qa_items]
    out["utility"] = store.get(fp, utility_key(questions), utility)
    out["fluency"] = _fluency(
        out["heldout"]["rows"], inp.base, f"{fp}|nll-under", gen, cache,
        lambda: say(f"{key}: fluency (answers' NLL under the base model)"),
    )  # fmt: skip
    return out


def _fluency(
    rows: list[dict], base: LoadedModel | None, key: str, gen: str, cache: MetricCache,
    announce: Callable[[], None] = lambda: None,
) -> dict[str, Any]:  # fmt: skip
    """Repetition rate of the held-out answers and their NLL under the base model."""
    from reveal_release.metrics.fluency import repetition_rate
    from reveal_release.metrics.likelihood import answer_token_logps, mean_nll

    fluency: dict[str, Any] = {"repetition_rate": repetition_rate([r["response"] for r in rows])}
    if base is None:
        fluency["nll_under_base_skipped"] = "no base model given (--base)"
        return fluency

    def nll() -> float:
        announce()
        pairs = [(r["prompt"], r["response"]) for r in rows]
        return mean_nll(answer_token_logps(base, [p for p in pairs if p[1].strip()]))

    fluency["nll_under_base"] = cache.get(f"{key}|{model_key(base)}|{gen}", nll)
    return fluency


def _cached_attack(
    attack: Any, name: str, key: str, loaded: LoadedModel, ctx: AttackContext,
    cache: MetricCache, cache_key: str, say: Report,
) -> dict[str, Any]:  # fmt: skip
    """One attack on one model, from the cache or run now (skips are not stored)."""

    def run() -> dict[str, Any]:
        say(f"{key}: attack {name}")
        start = time.perf_counter()
        try:
            res = attack.run(ctx, loaded)
        except AttackSkipped as exc:  # not stored: a later run tries again
            raise NotCached({"skipped": str(exc)}) from None
        except RuntimeError as exc:  # e.g. out of memory: say so, go on
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise NotCached({"skipped": f"could not run here: {first}"}) from None
        res["seconds"] = time.perf_counter() - start
        return res

    return cache.get(cache_key, run)


def _attacks(
    inp: EvalInputs,
    subject: tuple[str, LoadedModel],
    judge: Any,
    probes: list[str],
    s: EvalSettings,
    cache: MetricCache,
    store: FigureStore,
    say: Report,
) -> dict[str, Any]:
    """Each chosen attack on the evaluated model (and on the base where it gives a before)."""
    attack_sig = signature({k: v for k, v in asdict(s).items() if k not in ("attacks", "baseline")})
    forget_sig, retain_sig = signature(inp.forget_rows), signature(inp.retain_rows)
    ctx = AttackContext(
        spec=inp.spec, judge=judge, probes=probes, forget_rows=inp.forget_rows,
        settings=asdict(s), base=inp.base, cached=cache.get, retain_rows=inp.retain_rows,
        store=store,
    )  # fmt: skip
    results: dict[str, Any] = {}
    for name in ALL_ATTACKS:
        attack = ATTACKS.get(name)()
        if name not in s.attacks:
            results[name] = {"skipped": "turned off (--attacks)", "description": attack.description}
            continue
        targets = [subject]
        if attack.on_base and inp.base is not None and subject[1] is not inp.base:
            targets = [("base", inp.base), subject]
        entry: dict[str, Any] = {"description": attack.description}
        data = (forget_sig if attack.uses_forget else "") + (
            retain_sig if attack.uses_retain else ""
        )
        for key, loaded in targets:
            cache_key = f"{model_key(loaded)}|attack|{name}|{attack_sig}|{data}"
            value = _cached_attack(attack, name, key, loaded, ctx, cache, cache_key, say)
            entry[key] = value
            if "skipped" in value:
                entry["skipped"] = value["skipped"]
        results[name] = entry
    return results


def recovery(attacked: float, released: float, base: float) -> float | None:
    """(attacked - released) / (base - released): the share of the removed target an attack
    brings back (0: none, 1: all); None when the release removed nothing to bring back."""
    gap = base - released
    return (attacked - released) / gap if gap > 0 else None


def _recoveries(attacks: dict[str, Any], models: dict[str, Any]) -> None:
    """Add each attack's recovery fraction on the released model (where it has a reveal rate)."""
    if not {"base", "released"} <= set(models):
        return
    base, released = models["base"]["heldout"]["rate"], models["released"]["heldout"]["rate"]
    for entry in attacks.values():
        res = entry.get("released")
        if res and "reveal_rate" in res:
            entry["recovery"] = recovery(res["reveal_rate"], released, base)


def evaluate(
    inp: EvalInputs, s: EvalSettings, out_dir: Path, say: Report = lambda m: None
) -> dict[str, Any]:
    """All figures of one evaluation (cached in out_dir/cache.json), as the report's metrics."""
    from reveal_release.targets.judges import make_judge

    start = time.perf_counter()
    spec = inp.spec
    probes = spec.probes(s.probe_limit)
    settings = asdict(s)
    # Every figure depends on the target's probes and judge; each key adds the rest it needs.
    cache = MetricCache(
        out_dir / "cache.json",
        salt=signature([spec.identity(), probes, spec.judge, spec.judge_params, spec.threshold]),
    )
    store = FigureStore(spec, probes)  # the models' own figures, kept across runs
    judge = make_judge(spec.judge, **spec.judge_params)
    models: dict[str, Any] = {}
    if inp.base is not None:
        models["base"] = _model_metrics("base", inp.base, inp, judge, probes, s, cache, store, say)
    if inp.released is not None:
        models["released"] = _model_metrics(
            "released", inp.released, inp, judge, probes, s, cache, store, say
        )
    subject = ("released", inp.released) if inp.released is not None else ("base", inp.base)
    assert subject[1] is not None
    attacks = _attacks(inp, subject, judge, probes, s, cache, store, say)
    _recoveries(attacks, models)
    baseline = _baseline(inp, s, judge, probes, cache, say)
    origin = inp.base if inp.base is not None else inp.released
    prov = cache.get(f"{model_key(origin)}|provenance", lambda: _provenance(origin, say))
    return {
        "format": 1,
        "target": spec.identity(),
        "evaluated": subject[0],
        "labels": inp.labels,
        "notes": inp.notes,
        "settings": settings,
        "probes": len(probes),
        "models": models,
        "attacks": attacks,
        "rounds": inp.rounds,
        "bandit": inp.bandit,
        "baseline_ga": baseline,
        "provenance": prov,
        "examples": _examples(models),
        "cache": {"hits": cache.hits + store.hits, "computed": cache.misses + store.misses},
        "seconds": time.perf_counter() - start,
    }


def _provenance(loaded: LoadedModel, say: Report) -> dict[str, Any]:
    from reveal_release.metrics.provenance import provenance

    say("base model: where its weights come from, how close they sit to each grid")
    return provenance(loaded)


def _baseline(
    inp: EvalInputs,
    s: EvalSettings,
    judge: Any,
    probes: list[str],
    cache: MetricCache,
    say: Report,
) -> dict[str, Any]:
    """The one-shot gradient-ascent baseline, or why it was not run."""
    from reveal_release.evaluate.baseline import ga_baseline
    from reveal_release.metrics.probes import reveal_rate
    from reveal_release.metrics.qa import qa_accuracy, retain_items

    if not s.baseline:
        return {"skipped": "turned off (--no-baseline)"}
    if inp.base is None or not inp.forget_rows or not inp.ga_steps:
        return {"skipped": "needs a run with a forget set and a release (rr eval --run DIR)"}
    base = inp.base

    def measure(loaded: LoadedModel) -> dict[str, Any]:
        r = reveal_rate(loaded, inp.spec, judge, probes, max_new_tokens=s.max_new_tokens)
        qa = qa_accuracy(loaded, retain_items(inp.spec.tags(), s.qa_limit)[0])
        return {"reveal_rate": r.rate, "qa_accuracy": qa.accuracy}

    def run() -> dict[str, Any]:
        say(f"baseline: one-shot gradient ascent, {inp.ga_steps} steps")
        return ga_baseline(
            base, inp.spec, inp.forget_rows, inp.ga_steps, measure, inp.train_config, seed=s.seed
        )

    sig = signature([inp.ga_steps, inp.forget_rows, inp.train_config, s.max_new_tokens,
                     s.probe_limit, s.qa_limit, s.seed])  # fmt: skip
    return cache.get(f"{model_key(base)}|baseline-ga|{sig}", run)


def _examples(models: dict[str, Any], n: int = 3) -> list[dict[str, Any]]:
    """The first held-out probes with each model's answer and score."""
    rows: list[dict[str, Any]] = []
    per = {k: m["heldout"]["rows"] for k, m in models.items()}
    for i in range(min(n, *(len(v) for v in per.values()))):
        any_rows = next(iter(per.values()))
        rows.append(
            {"prompt": any_rows[i]["prompt"]}
            | {k: {"response": v[i]["response"], "score": v[i]["score"]} for k, v in per.items()}
        )
    return rows
