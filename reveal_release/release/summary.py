"""The tables `rr release` ends with: per round, before / after, and two example answers."""

from __future__ import annotations

from typing import Any

from reveal_release.console import human_bytes, table
from reveal_release.runs import RunDir

ROUND_COLUMNS = [
    "round", "held-out reveal", "quantised copy", "codes changed", "retain acc.", "perplexity",
    "forget set", "steps", "train s", "round s", "peak RSS",
]  # fmt: skip


def _short(text: str, n: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _quant(m: dict[str, Any]) -> str:
    rate = m.get("quant_reveal_rate")
    return "-" if rate is None else f"{rate:.2f} ({m['quant_scheme']})"


def _share(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _round_label(r: dict[str, Any]) -> str:
    if r.get("rolled_back"):
        return f"{r['round']} (rolled back)"
    fraction = r.get("update_fraction", 1.0)
    return f"{r['round']} (update x{fraction:g})" if fraction != 1 else str(r["round"])


def round_rows(base: dict[str, Any], rounds: list[dict[str, Any]]) -> list[tuple]:
    """One row for the base model and one per measured round."""
    rows = [
        (
            "base", base["heldout_reveal_rate"], _quant(base), "-", base["retain_accuracy"],
            base["perplexity"], *("-",) * 5,
        )
    ]  # fmt: skip
    for r in rounds:
        rows.append(
            (
                _round_label(r),
                r["heldout_reveal_rate"],
                _quant(r),
                _share(r.get("quant_codes_changed")),
                r["retain_accuracy"],
                r["perplexity"],
                r["forget_size"],
                r["train_steps"],
                r["train_seconds"],
                r["round_seconds"],
                human_bytes(r["peak_rss_bytes"]),
            )
        )
    return rows


def retain_label(m: dict[str, Any]) -> str:
    """'retain accuracy', with how many general questions were left out as the target's own."""
    left = len(m.get("retain_left_out", []))
    return (
        f"retain accuracy ({left} questions about the target left out)"
        if left
        else "retain accuracy"
    )


def before_after(base: dict[str, Any], last: dict[str, Any]) -> None:
    """Before/after figures and the two held-out answers that changed most."""
    table(
        "before / after",
        ["metric", "before", f"after round {last['round']}", "after / before"],
        [
            ("held-out reveal rate", base["heldout_reveal_rate"], last["heldout_reveal_rate"], "-"),
            ("quantised copy's reveal rate", _quant(base), _quant(last), "-"),
            (retain_label(last), base["retain_accuracy"], last["retain_accuracy"],
             last["retain_ratio"]),
            ("perplexity", base["perplexity"], last["perplexity"], last["ppl_ratio"]),
        ],
    )  # fmt: skip
    after = {e["prompt"]: e for e in last.get("examples", [])}
    shown = [e for e in base.get("examples", []) if e["prompt"] in after]
    shown.sort(key=lambda e: after[e["prompt"]]["score"] - e["score"])
    table(
        "example answers (held-out probes)",
        ["probe", "before", "after"],
        [
            (_short(e["prompt"], 48), _short(e["response"]), _short(after[e["prompt"]]["response"]))
            for e in shown[:2]
        ],
    )


def print_summary(rd: RunDir, title: str) -> None:
    """Per-round table, then before/after: held-out reveal, retain accuracy, perplexity, answers."""
    base = rd.base_metrics()
    if not base:
        return
    rounds = [m for m in (rd.round_metrics(k) for k in rd.rounds()) if m]
    table(title, ROUND_COLUMNS, round_rows(base, rounds))
    kept = [r for r in rounds if r.get("trained") and not r.get("rolled_back")]
    if kept:
        before_after(base, kept[-1])  # the last kept round is the model in DIR/model
