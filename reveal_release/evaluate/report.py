"""DIR/report/: metrics.json, report.md and a self-contained report.html with inline PNGs."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from reveal_release.atomic import atomic_write_json, atomic_write_text
from reveal_release.errors import RRError
from reveal_release.evaluate.metrics_schema import METRICS_SCHEMA
from reveal_release.evaluate.plots import PLOTS
from reveal_release.metrics.figure_cache import finite
from reveal_release.schema import read_json

Table = tuple[str, list[str], list[list[str]]]


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def summary_rows(m: dict[str, Any]) -> list[list[str]]:
    """Before/after rows: metric, base, evaluated model."""
    models = m.get("models", {})
    cols = [k for k in ("base", "released") if k in models]
    left = max((len(models[c]["utility"].get("qa_left_out", [])) for c in cols), default=0)
    qa_name = (
        f"general QA accuracy (utility; {left} about the target left out)"
        if left
        else "general QA accuracy (utility)"
    )
    getters = [
        ("held-out reveal rate (lower: forgotten)", lambda x: x["heldout"]["rate"]),
        ("held-out mean judge score", lambda x: x["heldout"]["mean_score"]),
        ("target knowledge QA accuracy", lambda x: x["knowledge"].get("accuracy")),
        (qa_name, lambda x: x["utility"]["qa_accuracy"]),
        ("perplexity on plain text", lambda x: x["utility"]["perplexity"]),
        ("repetition rate of answers", lambda x: x["fluency"]["repetition_rate"]),
        ("answers' NLL under the base model", lambda x: x["fluency"].get("nll_under_base")),
    ]
    rows = []
    for name, get in getters:
        vals = [get(models[c]) for c in cols]
        if all(v is None for v in vals):
            continue
        rows.append([name, *[_f(v) for v in vals]])
    return rows


def attack_rows(m: dict[str, Any]) -> list[list[str]]:
    """One row per attack: its figure on the base and on the evaluated model, or why skipped."""
    ev = m.get("evaluated", "released")
    rows = []
    for name, e in (m.get("attacks") or {}).items():

        def fig(res: dict | None) -> str:
            if not res:
                return "-"
            if "skipped" in res:
                return "skipped"
            if "auc" in res:
                return f"AUC {res['auc']:.3f}"
            return f"{res['reveal_rate']:.2f}"

        res = e.get(ev)
        note = e.get("skipped", "")
        if res and name.startswith("relearn") and "samples" in res:
            note = f"{res['samples']} samples, {res['steps']} steps, lr {res['lr']:g}"
        if res and name.startswith("quant") and "reveal_rate" in res:
            parts = []
            if "perplexity" in res:
                qa = res.get("qa_accuracy")
                parts.append(f"perplexity after {res['perplexity']:.2f}"
                             + (f", QA {qa:.3f}" if qa is not None else ""))  # fmt: skip
            if res.get("codes_changed") is not None:
                parts.append(f"{100 * res['codes_changed']:.2f}% of codes changed by the release")
            if res.get("unchanged"):
                parts.append("the model is on this grid: its own figures")
            note = "; ".join(parts)
        if res and "auc" in res:
            note = (
                f"{res['members']} forget vs {res['nonmembers']} unseen answers; "
                "the nearer the base's AUC, the less the forget text stands out"
            )
        base_fig = fig(e.get("base")) if ev != "base" else "-"
        rec = e.get("recovery")
        recovered = "-" if rec is None else f"{rec:.2f}"
        rows.append([name, e.get("description", ""), base_fig, fig(res), recovered, note])
    return rows


def provenance_rows(m: dict[str, Any]) -> list[list[str]]:
    """Where the base model's weights come from and how close they sit to each grid."""
    p = m.get("provenance") or {}
    if not p:
        return []
    rows = [["source", p.get("gguf") or p.get("spec", "-")]]
    if p.get("gguf_formats"):
        formats = ", ".join(f"{k} x{v}" for k, v in sorted(p["gguf_formats"].items()))
        rows.append(["GGUF tensor formats", formats])
    for scheme, share in (p.get("on_grid") or {}).items():
        on = "-" if share is None or share != share else f"{100 * share:.1f}%"
        rows.append([f"weights already on the {scheme} grid", on])
    return rows


def _rounds_table(m: dict[str, Any]) -> Table | None:
    rounds = m.get("rounds") or []
    if not rounds:
        return None
    rows = [
        [
            "base" if r["round"] == 0 else str(r["round"]),
            _f(r["heldout_reveal_rate"], 2),
            _f(r["retain_accuracy"]),
            _f(r["perplexity"], 2),
            "rolled back" if r.get("rolled_back") else "",
        ]
        for r in rounds
    ]
    columns = ["round", "held-out reveal", "retain QA", "perplexity", "note"]
    return ("Rounds (as Release measured them)", columns, rows)


def _baseline_table(m: dict[str, Any]) -> Table | None:
    ga = m.get("baseline_ga") or {}
    if not ga.get("points"):
        return None
    title = (
        f"One-shot gradient ascent on the same forget set ({ga['forget_size']} answers, "
        f"lr {ga['lr']:g}, no retain loss)"
    )
    rows = [
        [str(p["step"]), _f(p["reveal_rate"], 2), _f(p["qa_accuracy"]), _f(p["loss"])]
        for p in ga["points"]
    ]
    return (title, ["steps", "held-out reveal", "general QA accuracy", "forget loss"], rows)


def _examples_table(m: dict[str, Any]) -> Table | None:
    ex = m.get("examples") or []
    if not ex:
        return None
    labels = m.get("labels", {})
    keys = [k for k in ("base", "released") if k in ex[0]]
    rows = [[e["prompt"], *[f"{e[k]['response']} ({e[k]['score']:.2f})" for k in keys]] for e in ex]
    title = "Example answers to held-out probes (judge score)"
    return (title, ["probe", *[labels.get(k, k) for k in keys]], rows)


def tables(m: dict[str, Any]) -> list[Table]:
    """Every table of the report, in order."""
    models = m.get("models", {})
    labels = m.get("labels", {})
    cols = [labels.get(k, k) for k in ("base", "released") if k in models]
    out: list[Table] = [("Before and after", ["metric", *cols], summary_rows(m))]
    ev = labels.get(m.get("evaluated", ""), m.get("evaluated", ""))
    out.append(
        (
            "Robustness attacks (reveal rate on held-out probes after the attack; recovered: "
            "(attacked - released) / (base - released))",
            ["attack", "what", "base", ev, "recovered", "note"],
            attack_rows(m),
        )
    )
    prov = provenance_rows(m)
    if prov:
        title = "Base model's weights (quantising onto a grid they sit on undoes small updates)"
        out.append((title, ["what", "value"], prov))
    for table in (_rounds_table(m), _baseline_table(m), _examples_table(m)):
        if table is not None:
            out.append(table)
    return out


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_md(m: dict[str, Any], images: list[Path]) -> str:
    """The report as Markdown, linking the PNGs beside it."""
    lines = [f"# rr eval: {m['target']}", ""]
    lines += [f"- {n}" for n in m.get("notes", [])]
    lines += [
        f"- evaluated: {m.get('labels', {}).get(m['evaluated'], m['evaluated'])}; "
        f"{m['probes']} held-out probes; {m['seconds']:.0f} s "
        f"({m['cache']['computed']} figures computed, {m['cache']['hits']} from the cache)",
        "",
    ]
    for title, head, rows in tables(m):
        lines += [f"## {title}", "", "| " + " | ".join(head) + " |"]
        lines += ["|" + "---|" * len(head)]
        lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
        lines.append("")
    skipped = (m.get("baseline_ga") or {}).get("skipped")
    if skipped:
        lines += [f"Gradient-ascent baseline not run: {skipped}", ""]
    lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(lines) + "\n"


CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
    "vertical-align:top;font-size:14px}th{background:#f3f3f3}img{max-width:100%}"
    ".note{color:#a33}"
)


def render_html(m: dict[str, Any], images: list[Path]) -> str:
    """The report as one HTML file; the PNGs are embedded, so it opens anywhere."""
    e = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>rr eval: {e(m['target'])}</title>"]
    parts.append(f"<style>{CSS}</style><h1>rr eval: {e(m['target'])}</h1><ul>")
    parts += [f"<li class='note'>{e(n)}</li>" for n in m.get("notes", [])]
    parts.append(
        f"<li>{m['probes']} held-out probes; {m['seconds']:.0f} s "
        f"({m['cache']['computed']} figures computed, {m['cache']['hits']} cached)</li></ul>"
    )
    for title, head, rows in tables(m):
        parts.append(f"<h2>{e(title)}</h2><table><tr>")
        parts += [f"<th>{e(h)}</th>" for h in head]
        parts.append("</tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
        parts.append("</table>")
    for p in images:
        data = base64.b64encode(p.read_bytes()).decode()
        img = f"<img alt='{e(p.stem)}' src='data:image/png;base64,{data}'>"
        parts.append(f"<h2>{e(p.stem)}</h2>{img}")
    return "\n".join(parts) + "\n"


def build_report(metrics: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write metrics.json, the PNGs, report.md and report.html into out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = finite(metrics)
    atomic_write_json(out_dir / "metrics.json", metrics)
    images = []
    for name, draw in PLOTS.items():
        path = draw(metrics, out_dir / name)
        if path is not None:
            images.append(path)
    md = out_dir / "report.md"
    page = out_dir / "report.html"
    atomic_write_text(md, render_md(metrics, images))
    atomic_write_text(page, render_html(metrics, images))
    return {"metrics": out_dir / "metrics.json", "markdown": md, "html": page}


def report_from_file(metrics_path: Path, out_dir: Path | None = None) -> dict[str, Path]:
    """Rebuild the report from a stored metrics.json, without any model; a damaged file is
    refused, naming the key, before anything is written."""
    fix = "rerun `rr eval` without --report-only to measure it again"
    metrics = read_json(metrics_path, METRICS_SCHEMA, fix)
    if metrics["evaluated"] not in metrics["models"]:
        raise RRError(
            f"{metrics_path}: 'evaluated' names {metrics['evaluated']!r}, which 'models' does "
            f"not hold: {fix}"
        )
    return build_report(metrics, out_dir or metrics_path.parent)
