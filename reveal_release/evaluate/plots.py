"""The report's PNG plots, drawn from metrics.json alone (no model needed)."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

DPI = 110


def _figure(width: float = 6.4, height: float = 3.8, cols: int = 1) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, cols, figsize=(width, height))
    return fig, axes


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _ratio(value: float | None, base: float | None) -> float:
    """value / base, nan (not drawn) when the base is 0 or either is unknown (None)."""
    return value / base if base and value is not None else float("nan")


def rounds_plot(m: dict[str, Any], path: Path) -> Path | None:
    """Held-out reveal rate and utility (ratios to the base) per round; rolled back hollow."""
    rows = m.get("rounds") or []
    if len(rows) < 2:
        return None
    fig, (a, b) = _figure(9.6, 3.8, cols=2)
    xs = [r["round"] for r in rows]
    base = rows[0]
    line = [i for i, r in enumerate(rows) if not r.get("rolled_back")]  # kept rounds only
    rate = [r["heldout_reveal_rate"] for r in rows]
    a.plot([xs[i] for i in line], [rate[i] for i in line], "o-", color="tab:red")
    a.set(xlabel="round (0 = base)", ylabel="held-out reveal rate", ylim=(-0.03, 1.03))
    a.set_title("Forgetting per round")
    acc = [_ratio(r["retain_accuracy"], base["retain_accuracy"]) for r in rows]
    ppl = [_ratio(r["perplexity"], base["perplexity"]) for r in rows]
    b.plot([xs[i] for i in line], [acc[i] for i in line], "o-", label="retain QA accuracy / base",
           color="tab:blue")  # fmt: skip
    b.plot([xs[i] for i in line], [ppl[i] for i in line], "s--", label="perplexity / base",
           color="tab:green")  # fmt: skip
    b.axhline(1.0, color="grey", lw=0.8)
    b.set(xlabel="round (0 = base)", ylabel="ratio to the base")
    b.set_title("Utility per round")
    for ax, ys in ((a, [r["heldout_reveal_rate"] for r in rows]), (b, acc)):
        back = [(x, y) for x, y, r in zip(xs, ys, rows, strict=True) if r.get("rolled_back")]
        if back:
            ax.scatter(
                *zip(*back, strict=True),
                s=120,
                facecolors="none",
                edgecolors="black",
                zorder=3,
                label="rolled back",
            )
        ax.set_xticks(xs)
        ax.grid(alpha=0.3)
    b.legend(fontsize=8)
    if any(r.get("rolled_back") for r in rows):
        a.legend(fontsize=8)
    return _save(fig, path)


def bandit_plot(m: dict[str, Any], path: Path) -> Path | None:
    """Reward of each pull and the mean per bandit step, one series per reveal."""
    rows = m.get("bandit") or []
    if not rows:
        return None
    fig, ax = _figure()
    by_round: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        by_round[r["round"]].append(r)
    offset = 0
    for round_, rs in sorted(by_round.items()):
        steps = sorted({r["step"] for r in rs})
        label = "first reveal" if round_ == 0 else f"round {round_} reveal"
        ax.scatter([offset + r["step"] for r in rs], [r["reward"] for r in rs], s=10, alpha=0.35)
        means = [
            sum(r["reward"] for r in rs if r["step"] == s) / sum(1 for r in rs if r["step"] == s)
            for s in steps
        ]
        ax.plot([offset + s for s in steps], means, "o-", label=f"{label} (mean per step)")
        offset += max(steps) + 1
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="bandit step (reveals one after another)", ylabel="reward")
    ax.set_title("Bandit reward over steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _rounds_on(ax: Any, rows: list[dict[str, Any]]) -> None:
    """The rounds' path (kept rounds joined, rolled-back ones hollow), each point labelled."""
    kept = [r for r in rows if not r.get("rolled_back")]
    ax.plot(
        [r["retain_accuracy"] for r in kept],
        [r["heldout_reveal_rate"] for r in kept],
        "o-",
        color="tab:blue",
        label="rounds (reveal-release)",
    )
    back = [r for r in rows if r.get("rolled_back")]
    if back:
        ax.scatter(
            [r["retain_accuracy"] for r in back],
            [r["heldout_reveal_rate"] for r in back],
            s=60,
            facecolors="none",
            edgecolors="tab:blue",
            label="rolled-back round",
        )
    for r in rows:
        name = (
            "base"
            if r["round"] == 0
            else f"r{r['round']}" + (" (rolled back)" if r.get("rolled_back") else "")
        )
        ax.annotate(
            name,
            (r["retain_accuracy"], r["heldout_reveal_rate"]),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=8,
        )


def _baseline_on(ax: Any, ga: list[dict[str, Any]], base: dict[str, Any] | None) -> None:
    """The GA baseline's path from rr eval's own base figures; one label per place."""
    xs = ([base["utility"]["qa_accuracy"]] if base else []) + [p["qa_accuracy"] for p in ga]
    ys = ([base["heldout"]["rate"]] if base else []) + [p["reveal_rate"] for p in ga]
    ax.plot(xs, ys, "s--", color="tab:orange", label="one-shot gradient ascent")
    at: dict[tuple[float, float], list[int]] = defaultdict(list)
    for p in ga:  # points on top of each other share one label
        at[(round(p["qa_accuracy"], 3), round(p["reveal_rate"], 3))].append(p["step"])
    for i, ((x, y), steps) in enumerate(at.items()):
        ax.annotate(
            f"GA {', '.join(map(str, steps))} steps",
            (x, y),
            textcoords="offset points",
            xytext=(6, 6 + 11 * i),  # stacked, so labels of nearby points stay apart
            fontsize=8,
        )


def tradeoff_plot(m: dict[str, Any], path: Path) -> Path | None:
    """Forget (held-out reveal rate) against utility (QA accuracy): rounds and GA baseline."""
    rows = m.get("rounds") or []
    models = m.get("models", {})
    ga = m.get("baseline_ga", {}).get("points") or []
    if not rows and not ga:
        return None
    fig, ax = _figure()
    if rows:
        _rounds_on(ax, rows)
    elif "base" in models:
        b = models["base"]
        ax.plot([b["utility"]["qa_accuracy"]], [b["heldout"]["rate"]], "o", label="base")
    if ga:
        _baseline_on(ax, ga, models.get("base"))
    ax.set(
        xlabel="retain QA accuracy (higher is better)",
        ylabel="held-out reveal rate (lower is better)",
        ylim=(-0.03, 1.03),
    )
    ax.set_title("Forget-utility trade-off (best: bottom right)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _attack_bars(m: dict[str, Any]) -> tuple[list[str], list, list, list]:
    """(labels, base rates, evaluated rates, recovery fractions) of every attack with a rate."""
    models = m.get("models", {})
    evaluated = m.get("evaluated", "released")
    labels, before, after, recovered = [], [], [], []
    if evaluated in models:
        labels.append("held-out probes")
        before.append(models["base"]["heldout"]["rate"] if "base" in models else None)
        after.append(models[evaluated]["heldout"]["rate"])
        recovered.append(None)
    for name, entry in (m.get("attacks") or {}).items():
        res = entry.get(evaluated, {})
        if "reveal_rate" in res:
            labels.append(name)
            b = entry.get("base", {}) if evaluated != "base" else {}
            before.append(b.get("reveal_rate"))
            after.append(res["reveal_rate"])
            recovered.append(entry.get("recovery"))
    return labels, before, after, recovered


def attacks_plot(m: dict[str, Any], path: Path) -> Path | None:
    """Reveal rate before and after each attack, and the share of the removed target it
    brings back (recovery fraction)."""
    evaluated = m.get("evaluated", "released")
    labels, before, after, recovered = _attack_bars(m)
    if not labels:
        return None
    fig, (ax, rx) = _figure(9.6, 0.5 * len(labels) + 1.6, cols=2)
    ys = list(range(len(labels)))
    ax.barh([y + 0.2 for y in ys], after, height=0.4, color="tab:red", label=evaluated)
    if evaluated != "base" and any(b is not None for b in before):
        ax.barh([y - 0.2 for y in ys], [b or 0 for b in before], height=0.4, color="tab:grey",
                label="base (where measured)")  # fmt: skip
    for y, v in zip(ys, after, strict=True):
        ax.text(v + 0.01, y + 0.2, f"{v:.2f}", va="center", fontsize=8)
    ax.set_yticks(ys, labels)
    ax.invert_yaxis()
    ax.set(xlabel="reveal rate on held-out probes", xlim=(0, 1.12))
    ax.set_title("Does the target come back under attack?")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    rec = [r if r is not None else 0.0 for r in recovered]
    rx.barh(
        ys, rec, height=0.5, color=["tab:purple" if r is not None else "none" for r in recovered]
    )
    for y, r in zip(ys, recovered, strict=True):
        rx.text(max(r or 0, 0) + 0.01, y, "-" if r is None else f"{r:.2f}", va="center", fontsize=8)
    rx.set_yticks(ys, [""] * len(ys))
    rx.invert_yaxis()
    rx.set(
        xlabel="recovered: (attacked - released) / (base - released)",
        xlim=(min(0, *rec) - 0.05, 1.12),
    )
    rx.set_title("Share of the removed target brought back")
    rx.axvline(0, color="black", lw=0.6)
    rx.grid(alpha=0.3, axis="x")
    return _save(fig, path)


PLOTS = {
    "rounds.png": rounds_plot,
    "bandit.png": bandit_plot,
    "tradeoff.png": tradeoff_plot,
    "attacks.png": attacks_plot,
}
