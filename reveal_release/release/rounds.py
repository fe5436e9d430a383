"""The Release loop: round k reveals again, trains module k, merges it, measures, decides."""

from __future__ import annotations

import copy
import dataclasses
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reveal_release.atomic import atomic_dir, atomic_write_json
from reveal_release.console import peak_rss_bytes
from reveal_release.errors import RRError
from reveal_release.metrics.model_figures import FigureStore
from reveal_release.models import LoadedModel
from reveal_release.release.config import ReleaseConfig
from reveal_release.release.followers import Followers
from reveal_release.release.measure import measure, measure_quantized, ratios
from reveal_release.release.updates import UPDATES, RoundInputs
from reveal_release.run_files import MODEL_MARKER, TRAIN_RESULT
from reveal_release.runs import RunDir, relevant, round_dir
from reveal_release.targets.spec import TargetSpec
from reveal_release.train import seeds
from reveal_release.train.checkpoint import remove_state
from reveal_release.train.loop import TrainResult
from reveal_release.train.lora import (
    adapter_file,
    add_update,
    apply_adapter,
    delta_weights,
    load_a_matrices,
)
from reveal_release.train.losses import FORGET_LOSSES

Report = Callable[..., None]


@dataclass
class ReleaseSummary:
    """What a release did: base figures, one entry per round, why it stopped."""

    base: dict[str, Any]
    rounds: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""
    seconds: float = 0.0


def check_inputs(run: RunDir, spec: TargetSpec, cfg: ReleaseConfig) -> tuple[list, list]:
    """The forget and retain sets of the run's reveal stage, or a one-line error."""
    run.reveal_config()
    forget = run.forget_set()
    where = run.path("reveal", "forget.jsonl")
    if not forget:
        raise RRError(f"the forget set {where} is empty: rerun `rr reveal` with a larger --budget")
    if not relevant(forget, spec.threshold):
        raise RRError(
            f"no answer in {where} reaches the target's threshold {spec.threshold}: "
            "the model showed nothing to forget; check the target"
        )
    retain = run.retain_set()
    if not retain and cfg.retain_weight > 0:
        path = run.path("reveal", "retain.jsonl")
        state = "is empty" if path.exists() else "is missing"
        raise RRError(
            f"the retain set {path} {state}: rerun `rr reveal` with a larger --retain-budget, "
            "or pass --retain-weight 0"
        )
    run.base_metrics()  # what earlier rounds left is read back later: check it now
    for k in run.rounds():
        run.round_metrics(k)
    for k in run.kept_rounds():
        adapter_file(run.path(round_dir(k), "adapter"))
    run.read_json("model/rr-model.json", schema=MODEL_MARKER)
    return forget, retain


def reopen_deleted_rounds(run: RunDir) -> list[int]:
    """Rounds the manifest has finished but whose folder the user deleted (to train them
    again, as a damaged round's error advises): marked pending, with the release. A later
    round still on disk was built on a deleted one: that is an error naming what to delete."""
    done = sorted(int(n[6:]) for n in run.manifest["stages"] if re.fullmatch(r"round-\d+", n))
    gone = [k for k in done if run.is_done(round_dir(k)) and not run.path(round_dir(k)).exists()]
    if not gone:
        return []
    later = [k for k in done if k > gone[0] and run.path(round_dir(k)).exists()]
    if later:
        raise RRError(
            f"{run.path(round_dir(gone[0]))} was deleted, but {run.path(round_dir(later[0]))} "
            f"was trained on top of it: delete round-{later[0]} and every later round folder "
            "too, then rerun"
        )
    for k in gone:
        run.reopen(round_dir(k))
    run.reopen("release")
    return gone


def save_model(run: RunDir, loaded: LoadedModel, round_: int, grid: str | None = None) -> None:
    """Write DIR/model: the merged model with its tokenizer, plain transformers format (and
    the base's grid it was rounded onto, if any)."""
    with atomic_dir(run.path("model")) as tmp:
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        info = {"round": round_, "base_fingerprint": loaded.fingerprint, "grid": grid}
        atomic_write_json(tmp / "rr-model.json", info)


def interference(run: RunDir, k: int) -> float | None:
    """Mean |cosine| between round k's update and each earlier round's, over modules."""
    if k < 2:
        return None
    cur = delta_weights(run.path(round_dir(k), "adapter"))
    cosines = []
    for j in range(1, k):
        folder = run.path(round_dir(j), "adapter")
        if not folder.exists():
            continue
        prev = delta_weights(folder)
        for name, d in cur.items():
            if name in prev:
                p = prev[name]
                denom = float(d.norm() * p.norm())
                if denom > 0:
                    cosines.append(abs(float((d * p).sum())) / denom)
    return sum(cosines) / len(cosines) if cosines else None


def decide(m: dict[str, Any], cfg: ReleaseConfig, k: int) -> tuple[str, str]:
    """(kind, reason) to stop after round k; ('', '') to go on. Utility comes first."""
    if m.get("train_stopped"):
        why = f"round {k} training stopped ({m['train_stopped']}): kept the last good weights"
        return "train", why
    rate = m["heldout_reveal_rate"]
    if m["retain_ratio"] < cfg.min_retain_ratio or m["ppl_ratio"] > cfg.max_ppl_ratio:
        return "budget", (
            f"utility budget spent in round {k}: retain {m['retain_ratio']:.2f}x "
            f"(min {cfg.min_retain_ratio}), perplexity {m['ppl_ratio']:.2f}x "
            f"(max {cfg.max_ppl_ratio}), held-out reveal rate {rate:.2f}"
        )
    quant = m.get("quant_reveal_rate")
    if rate <= cfg.stop_rate and (quant is None or quant <= cfg.stop_rate):
        copy_ = "" if quant is None else f", its {m['quant_scheme']} copy {quant:.2f}"
        return "gone", f"target gone: held-out reveal rate {rate:.2f}{copy_} <= {cfg.stop_rate}"
    if k >= cfg.rounds:
        quant_part = "" if quant is None else f", {m['quant_scheme']} copy {quant:.2f}"
        return "rounds", f"{k} rounds done (held-out reveal rate {rate:.2f}{quant_part})"
    return "", ""


def calibration_rows(run: RunDir, k: int, first: list[dict], limit: int = 96) -> list[dict]:
    """The forget answers of rounds 1..k (`first`: round 1's), newest first (where the release
    differs most from the base): what rounding onto the base's grid is calibrated on."""
    rows: list[dict] = []
    for j in range(k, 1, -1):
        path = f"{round_dir(j)}/forget.jsonl"
        if run.path(path).exists():
            rows += run.read_samples(path)
    return (rows + list(first))[:limit]


class Rounds:
    """The state the rounds share: the current model M_k and every earlier round's A."""

    def __init__(
        self, run: RunDir, base: LoadedModel, spec: TargetSpec, cfg: ReleaseConfig,
        report: Report | None, backend: str,
    ):  # fmt: skip
        from reveal_release.targets.judges import make_judge

        self.run, self.spec, self.cfg, self.backend = run, spec, cfg, backend
        self.report = report or (lambda kind, **kw: None)
        self.forget0, self.retain = check_inputs(run, spec, cfg)
        self.update = UPDATES.get(cfg.update)
        self.judge = make_judge(spec.judge, **spec.judge_params)
        if FORGET_LOSSES.get(cfg.loss).needs_spans and self.judge.spans(["-"]) is None:
            raise RRError(
                f"--loss {cfg.loss} needs a judge that marks the target in answers (person); "
                f"the '{spec.judge}' judge cannot: use --loss npo"
            )
        self.current = base  # M_k in full precision: every round trains on it
        self.earlier_a: list[dict] = []
        self.summary = ReleaseSummary(base={})
        self.base_codes = None  # the base model's codes under cfg.stop_quant, before any merge
        self.grid = None  # the scheme whose grid the release keeps (cfg.snap), if any
        self.grids: dict[str, Any] | None = None  # the base's grid, layer by layer
        self.rounded: LoadedModel | None = None  # M_k rounded onto that grid (None: stale)
        self.last_snap: dict[str, Any] = {}
        self.base_weights: dict[str, Any] = {}  # W0 of the quantisable layers (for snap_gain)
        self.focus_spans: int | None = None  # target spans the last round's forget loss saw
        self.store = FigureStore(spec, spec.probes(cfg.probe_limit))
        self.version = 0  # bumped at every change of M_k's weights
        self.measured_version = -1  # the version the last figures were measured on
        self.merged: dict[int, tuple[str, float]] = {}  # round -> (its adapter, fraction kept)
        self.followers = Followers()  # the other processes of a launch, if any

    def phase(self, k: int, what: str) -> None:
        """Tell the reporter what round k is doing."""
        self.report("phase", round=k, phase=what)

    def released(self) -> LoadedModel:
        """The model the release hands out: M_k, or M_k rounded onto the base's grid when the
        base sits on one (rounded once per round, from the full-precision M_k)."""
        if self.grids is None or len(self.earlier_a) == 0:
            return self.current
        if self.rounded is None:
            from reveal_release.release.snap import scale_update, snap

            k = len(self.earlier_a)
            self.phase(k, f"rounding the merged weights onto the base's {self.grid} grid")
            model = copy.deepcopy(self.current.model)
            scale_update(model, self.base_weights, self.cfg.snap_gain)
            rows = self.calibration_rows(k)
            done = snap(model, self.current.tokenizer, self.grids, rows)
            self.last_snap = {"snap": self.grid, "snap_gain": self.cfg.snap_gain, **done}
            self.rounded = dataclasses.replace(self.current, model=model)
        return self.rounded

    def calibration_rows(self, k: int) -> list[dict]:
        """The rows the rounding after round k is calibrated on."""
        return calibration_rows(self.run, k, self.forget0)

    def _measure(self, loaded: LoadedModel, store: FigureStore | None = None) -> dict[str, Any]:
        """The round's figures (`store`: read and kept by the model's fingerprint, for the base
        only), with the figures as the store keeps them under "figures"."""
        cfg = self.cfg
        m = measure(
            loaded, self.spec, self.judge, cfg.probe_max_new_tokens, cfg.probe_limit,
            cfg.qa_limit, store,
        )  # fmt: skip
        if cfg.stop_quant != "none":
            q = measure_quantized(
                loaded, self.spec, self.judge, cfg.stop_quant, self.base_codes,
                cfg.probe_max_new_tokens, cfg.probe_limit, store,
            )  # fmt: skip
            m["figures"].update(q.pop("figures"))
            m.update(q)
        self.measured_version = self.version
        return m

    def measure_base(self) -> dict[str, Any]:
        """The base model's figures, measured once per run (and its grid and codes, each time)."""
        from reveal_release.release.snap import base_scheme

        if self.cfg.stop_quant != "none":
            from reveal_release.quantizers import codes_of

            self.base_codes = codes_of(self.current.model, self.cfg.stop_quant)
        if self.cfg.snap == "auto":
            self.grid = base_scheme(self.current.model)
        elif self.cfg.snap != "none":
            self.grid = self.cfg.snap
        if self.grid:
            from reveal_release.release.snap import grids_of

            self.current.model.float()  # grid points are exact in fp32 only (not in bf16)
            self.grids = grids_of(self.current.model, self.grid)
            if self.cfg.snap_gain != 1:
                from reveal_release.quantizers import quantizable

                self.base_weights = {
                    n: m.weight.detach().to("cpu", copy=True)
                    for n, m in quantizable(self.current.model)
                }
        from reveal_release.metrics.qa import retain_items

        left_out = [it.question for it in retain_items(self.spec.tags())[1]]
        done = self.run.stage_info("release-base")
        if done and done.get("retain_left_out", []) != left_out:
            # Measured before the questions about the target were left out: measure it again.
            self.run.reopen("release-base")
        with self.run.stage("release-base") as st:
            if not st.done:
                self.phase(0, "measuring the base model")
                m = self._measure(self.current, self.store)
                m.pop("figures")
                st.info.update(m)
        if self.run.base_metrics() != st.info:  # written now, or deleted or damaged since
            self.run.write_json("release/base-metrics.json", st.info)
        return st.info

    def resume(self, k: int, info: dict[str, Any]) -> bool:
        """Take a finished round back from disk; True when the release stopped there."""
        self.summary.rounds.append(info)
        if info.get("trained") and not info.get("rolled_back"):
            self.phase(k, "rebuilding from the saved adapter")
            self.merge(k, info.get("update_fraction", 1.0))
        more = info.get("stop_kind") == "rounds" and k < self.cfg.rounds
        if info.get("stop") and not more:  # a later --rounds may extend a run
            self.summary.stop_reason = info["stop"]
            return True
        return False

    def reveal_again(self, k: int) -> list[dict]:
        """Round k's forget set: what the current model still reveals (NothingRevealed: none)."""
        from reveal_release.reveal.config import RevealConfig
        from reveal_release.reveal.samplers import make_sampler
        from reveal_release.reveal.stage import run_reveal

        self.phase(k, "revealing from the current model")
        cfg = self.cfg
        rcfg = RevealConfig(
            budget=cfg.reveal_budget,
            retain_budget=0,
            seed=seeds.round_reveal(cfg.seed, k),
            max_new_tokens=cfg.reveal_max_new_tokens,
        )
        warm = "reveal" if k == 2 else f"{round_dir(k - 1)}/reveal"
        model = self.released()
        sampler = make_sampler(self.backend, model)
        try:
            run_reveal(
                model, self.spec, sampler, self.run, rcfg,
                out=f"{round_dir(k)}/reveal", round_=k,
                warm_start=warm if self.run.path(warm, "state").exists() else None,
                on_step=lambda name, i, n, pulls: self.report("reveal", round=k, step=i, total=n),
            )  # fmt: skip
        finally:
            sampler.close()
        return self.run.read_samples(f"{round_dir(k)}/reveal/forget.jsonl")

    def forget_set(self, k: int) -> list[dict]:
        """Round 1 uses the run's reveal; later rounds reveal again (once: kept on disk)."""
        if k == 1:
            return self.forget0
        saved = f"{round_dir(k)}/forget.jsonl"
        return (
            self.run.read_samples(saved) if self.run.path(saved).exists() else self.reveal_again(k)
        )

    def focused(self, forget: list[dict]) -> list[dict]:
        """The forget rows with the judge's target spans (`focus`) when --focus auto or the
        loss needs them (generic) and the judge marks any; the rows unchanged otherwise."""
        self.focus_spans = None
        if self.cfg.focus == "none" and not FORGET_LOSSES.get(self.cfg.loss).needs_spans:
            return forget
        spans = self.judge.spans([r["response"] for r in forget])
        if spans is None or not any(spans):
            return forget
        self.focus_spans = sum(len(s) for s in spans)
        return [{**r, "focus": s} for r, s in zip(forget, spans, strict=True)]

    def train(self, k: int, forget: list[dict]) -> TrainResult:
        """Module k from the update rule, or from disk when a killed run had saved it."""
        self.phase(k, f"training ({self.cfg.update}, {self.cfg.loss})")
        forget = self.focused(forget)
        folder = self.run.path(round_dir(k))
        saved = self.run.read_json(f"{round_dir(k)}/train-result.json", schema=TRAIN_RESULT)
        cfg = dataclasses.replace(self.cfg, steps=self.cfg.steps_for(len(forget)))
        if (folder / "adapter").exists() and saved:
            result = TrainResult(**{f.name: saved[f.name] for f in dataclasses.fields(TrainResult)})
        else:
            inputs = RoundInputs(
                model=self.current.model, tokenizer=self.current.tokenizer, forget=forget,
                retain=self.retain, earlier_a=self.earlier_a, cfg=cfg, round_=k, workdir=folder,
                on_step=lambda step, entry: self.report("train", round=k, total=cfg.steps, **entry),
            )  # fmt: skip
            self.followers.train(inputs, list(self.merged.values()))
            result = self.update(inputs, folder / "adapter")
        self.run.write_json(f"{round_dir(k)}/train-result.json", dataclasses.asdict(result))
        remove_state(folder / "train-state")
        return result

    def merge(self, k: int, fraction: float = 1.0) -> None:
        """Fold module k (scaled by `fraction`, --shrink) into the full-precision model and keep
        the module's A for later rounds (the rounded copy is made again when next needed)."""
        adapter = self.run.path(round_dir(k), "adapter")
        model = apply_adapter(self.current.model, adapter)
        self.current = dataclasses.replace(self.current, model=model)
        self.rounded = None
        self.version += 1
        self.merged[k] = (str(adapter), 1.0)
        self.rescale(k, 1.0, fraction)
        self.earlier_a.append(load_a_matrices(adapter))

    def rescale(self, k: int, was: float, now: float) -> None:
        """Module k's merged update from `was` to `now` times its trained size."""
        if now != was:
            adapter = self.run.path(round_dir(k), "adapter")
            add_update(self.current.model, adapter, now - was)
            self.merged[k] = (str(adapter), now)
            self.rounded = None
            self.version += 1

    def shrink(self, k: int, m: dict[str, Any], measure: Callable[[], dict]) -> dict[str, Any]:
        """Round k's update bisected in size (--shrink times) for the largest part within the
        utility budget (its figures, with every try's); the round as trained when none is."""

        def brief(t: float, x: dict[str, Any]) -> dict[str, Any]:
            keys = ("heldout_reveal_rate", "quant_reveal_rate", "retain_ratio", "ppl_ratio")
            return {"fraction": t, **{key: x.get(key) for key in keys}}

        tries, at, lo, hi = [brief(1.0, m)], 1.0, 0.0, 1.0
        best: tuple[float, dict[str, Any]] = (1.0, m)  # as trained, if no part fits
        for _ in range(self.cfg.shrink):
            t = (lo + hi) / 2
            self.phase(k, f"the update at {t:g}x its size: measuring")
            self.rescale(k, at, t)
            at, x = t, measure()
            tries.append(brief(t, x))
            if x["stop_kind"] == "budget":
                hi = t
                continue
            lo, best = t, (t, x)
            if x["stop_kind"] == "gone":  # the smallest part that is enough
                break
        self.rescale(k, at, best[0])
        m = best[1]
        m.update(update_fraction=best[0], shrink_tries=tries)
        return m

    def measure_round(
        self, k: int, forget: list, result: TrainResult, base: dict, t0: float
    ) -> dict[str, Any]:
        """Round k's figures, ratios to the base, training record and the stop decision."""
        released = self.released()
        self.phase(k, "measuring")
        m = self._measure(released)
        m.update(ratios(m, base))
        m.update(self.last_snap)
        m.update(
            round=k,
            trained=True,
            forget_size=len(forget),
            focus_spans=self.focus_spans,
            train_steps=result.steps,
            train_seconds=result.seconds,
            train_stopped=result.stopped,
            resumed_from_step=result.resumed_from,
            final_losses=result.history[-1] if result.history else {},
            interference=interference(self.run, k),
            round_seconds=time.perf_counter() - t0,
            peak_rss_bytes=peak_rss_bytes(),
        )
        m["stop_kind"], m["stop"] = decide(m, self.cfg, k)
        if m["stop_kind"] == "budget" and k > 1:
            # Keep the last model within the utility budget: round k is measured and kept on
            # disk, but not merged into DIR/model, exported or built upon.
            m["rolled_back"] = True
            m["stop"] += f": rolled back to round {k - 1}"
        return m

    def new_round(self, k: int, info: dict[str, Any], base: dict[str, Any]) -> bool:
        """Reveal, train, merge, measure and save round k; True when the release stops."""
        from reveal_release.reveal.stage import NothingRevealed

        t0 = time.perf_counter()
        try:
            forget = self.forget_set(k)
        except NothingRevealed as exc:
            stop = f"round {k}: {exc}".split(" (")[0]
            info.update(round=k, trained=False, stop=stop, stop_kind="nothing")
            return self.record(info)
        self.run.write_jsonl(f"{round_dir(k)}/forget.jsonl", forget)
        result = self.train(k, forget)
        self.merge(k)
        m = self.measure_round(k, forget, result, base, t0)
        if m["stop_kind"] == "budget" and self.cfg.shrink:
            m = self.shrink(k, m, lambda: self.measure_round(k, forget, result, base, t0))
            m["round_seconds"] = time.perf_counter() - t0
        figures = m.pop("figures", {})
        self.run.write_json(f"{round_dir(k)}/metrics.json", m)
        if not m.get("rolled_back"):
            self.phase(k, "saving the merged model")
            save_model(self.run, self.released(), k, self.grid)
            if self.measured_version == self.version:
                self.keep_figures(figures)
        info.update({key: v for key, v in m.items() if key != "examples"})
        return self.record(info)

    def keep_figures(self, figures: dict[str, Any]) -> None:
        """Keep the round's figures under the saved model's fingerprint, so `rr eval` reads
        them instead of measuring the same model again."""
        from reveal_release.metrics.model_figures import weights_key
        from reveal_release.models import folder_fingerprint

        fingerprint = folder_fingerprint(self.run.path("model"))
        model = self.released().model
        mk = weights_key(fingerprint, model.dtype, model.device)
        for key, value in figures.items():
            self.store.put(mk, key, value)

    def record(self, info: dict[str, Any]) -> bool:
        """Add a finished round to the summary; True when it stopped the release."""
        self.summary.rounds.append(info)
        if info.get("stop"):
            self.summary.stop_reason = info["stop"]
            return True
        return False

    def run_all(self) -> ReleaseSummary:
        """Run (or resume) the rounds; every finished round survives a kill."""
        start = time.perf_counter()
        base = self.measure_base()
        self.summary.base = base
        for k in range(1, self.cfg.rounds + 1):
            with self.run.stage(round_dir(k)) as st:
                stop = self.resume(k, st.info) if st.done else self.new_round(k, st.info, base)
            if stop:
                break
        self.summary.seconds = time.perf_counter() - start
        return self.summary


def run_release(
    run: RunDir,
    base: LoadedModel,
    spec: TargetSpec,
    cfg: ReleaseConfig,
    *,
    report: Report | None = None,
    backend: str = "hf",
) -> ReleaseSummary:
    """Run (or resume) the rounds of a release on the run's base model."""
    return Rounds(run, base, spec, cfg, report, backend).run_all()
