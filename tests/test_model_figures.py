"""The figure store: a model's figures are read back only for the same weights, probes and
settings; changing any one of them measures again."""

from __future__ import annotations

from pathlib import Path

from helpers import save_model, tiny_llama, write_spec


def _measure(loaded, spec, store, *, tokens: int = 4, probes: int = 2, qa: int = 3) -> dict:
    from reveal_release.release.measure import measure
    from reveal_release.targets.judges import make_judge

    judge = make_judge(spec.judge, **spec.judge_params)
    m = measure(loaded, spec, judge, tokens, probes, qa, store)
    return {k: m[k] for k in ("heldout_reveal_rate", "examples", "retain_n", "perplexity")}


def test_base_figures_are_reused_only_for_the_same_model_probes_and_settings(
    tiny_folder: Path, tokenizer, tmp_path: Path
) -> None:
    from reveal_release.metrics.model_figures import FigureStore
    from reveal_release.models import load_model
    from reveal_release.targets.spec import load_target

    spec = load_target(str(write_spec(tmp_path)))
    root = tmp_path / "figures"
    model = load_model(str(tiny_folder), device="cpu")

    def store(probes: int = 2) -> FigureStore:  # a new store: as a later process would open it
        return FigureStore(spec, spec.probes(probes), root=root)

    first = store()
    before = _measure(model, spec, first)
    assert (first.misses, first.hits) == (2, 0)  # held-out probes and utility, both measured

    again = store()
    assert _measure(model, spec, again) == before
    assert (again.misses, again.hits) == (0, 2)  # same model, probes and settings: read back

    longer = store()
    _measure(model, spec, longer, tokens=5)  # answer length: held-out measured again
    assert (longer.misses, longer.hits) == (1, 1)

    more_qa = store()
    _measure(model, spec, more_qa, qa=4)  # other questions: utility measured again
    assert (more_qa.misses, more_qa.hits) == (1, 1)

    other_probes = store(3)
    _measure(model, spec, other_probes, probes=3)  # other probes: both measured again
    assert (other_probes.misses, other_probes.hits) == (2, 0)

    other = save_model(tiny_llama(tokenizer, seed=1), tokenizer, tmp_path / "other")
    other_model = load_model(str(other), device="cpu")
    assert other_model.fingerprint != model.fingerprint
    different = store()
    _measure(other_model, spec, different)  # other weights: both measured again
    assert (different.misses, different.hits) == (2, 0)

    strict = load_target(str(write_spec(tmp_path, threshold=0.5, name="strict")))
    stricter = FigureStore(strict, strict.probes(2), root=root)
    _measure(model, strict, stricter)  # another target (judge threshold): both measured again
    assert (stricter.misses, stricter.hits) == (2, 0)


def test_a_model_without_a_fingerprint_is_never_stored(tiny_model, tmp_path: Path) -> None:
    from reveal_release.metrics.model_figures import FigureStore
    from reveal_release.targets.spec import load_target

    spec = load_target(str(write_spec(tmp_path)))
    root = tmp_path / "figures"
    for _ in range(2):
        store = FigureStore(spec, spec.probes(2), root=root)
        _measure(tiny_model, spec, store)  # weights in memory (fingerprint ""): always measured
        assert (store.misses, store.hits) == (0, 0)
    assert not root.exists()


def test_a_model_on_the_grid_is_its_own_quantised_copy(tiny_folder: Path, tmp_path: Path) -> None:
    import copy

    from reveal_release.evaluate.attacks import ATTACKS, AttackContext
    from reveal_release.evaluate.settings import EvalSettings
    from reveal_release.metrics.model_figures import FigureStore, heldout_key
    from reveal_release.models import LoadedModel, load_model
    from reveal_release.quantizers import maps_onto_itself, quantize_model
    from reveal_release.targets.judges import make_judge
    from reveal_release.targets.spec import load_target

    spec = load_target(str(write_spec(tmp_path, threshold=0.5)))
    model = load_model(str(tiny_folder), device="cpu")
    on_grid = copy.deepcopy(model.model)
    for _ in range(4):  # rounding a rounded weight can move it by an ulp: to a fixed point
        quantize_model(on_grid, "int4")
    assert maps_onto_itself(on_grid, "int4") and not maps_onto_itself(model.model, "int4")

    settings = {**EvalSettings().__dict__, "max_new_tokens": 4, "qa_limit": 3}
    store = FigureStore(spec, spec.probes(2), root=tmp_path / "figures")
    ctx = AttackContext(spec=spec, judge=make_judge("code"), probes=spec.probes(2),
                        forget_rows=[], settings=settings, store=store)  # fmt: skip
    attack = ATTACKS.get("quant-int4")()
    off = attack.run(ctx, model)  # off the grid: a quantised copy is measured
    assert off["unchanged"] is False and 0 <= off["reveal_rate"] <= 1
    saved = tmp_path / "on-grid"
    save_model(on_grid, model.tokenizer, saved)
    on = load_model(str(saved), device="cpu")
    res = attack.run(ctx, on)  # on the grid: the model's own figures, measured once
    own = store.get(on.fingerprint + "|float32", heldout_key(4), lambda: None)
    assert res["unchanged"] is True and res["reveal_rate"] == own["rate"]
    bare = attack.run(ctx, LoadedModel.bare(on.model, on.tokenizer))  # no fingerprint
    assert bare["unchanged"] is True and bare["reveal_rate"] == own["rate"]
