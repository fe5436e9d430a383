#!/usr/bin/env python3
"""The package's import graph between its top-level parts, read statically, and its layering.

    python scripts/import_graph.py [--check]

Every import counts, including those inside functions and modules named by string (registries
that import a module by its dotted name). Prints one line per part (what it imports), the
cycles between parts, and each import that goes *up* the declared order below (the order of
ARCHITECTURE.md: a part may import only the parts listed after it). `--check` exits 1 when
there is a cycle or an upward import.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "reveal_release"
# Top to bottom: each part may import only parts further down this list.
ORDER = (
    "__main__",
    "launched",
    "cli",
    "launch",
    "cli_options",
    "model_checks",
    "pipeline",
    "evaluate",
    "release",
    "r2f",
    "reveal",
    "metrics",
    "train",
    "targets",
    "quantizers",
    "sentence_embedder",
    "memory_model",
    "generation",
    "decoding",
    "models",
    "embedded_models",
    "model_cache",
    "devices",
    "parallel",
    "runs",
    "run_lock",
    "run_files",
    "sample_rows",
    "schema",
    "presets",
    "options",
    "stage_clock",
    "console",
    "atomic",
    "registry",
    "errors",
)


def _imported(node: ast.AST, rel: tuple[str, ...], pkg: str) -> list[str]:
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level:
        base = list(rel[: -node.level])
        mod = ".".join([pkg, *base] + ([node.module] if node.module else []))
        return [mod] + [f"{mod}.{a.name}" for a in node.names]
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value] if node.value.startswith(pkg + ".") else []
    return []


def graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Part -> the other parts it imports (a part is a top-level module or subpackage)."""
    pkg, parts = root.name, {}
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root).parts
        unit = rel[0][:-3] if len(rel) == 1 else rel[0]
        if unit == "__init__":
            continue
        deps = parts.setdefault(unit, set())
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), str(f))):
            for name in _imported(node, rel, pkg):
                bits = name.split(".")
                if bits[0] == pkg and len(bits) > 1 and bits[1] != unit:
                    deps.add(bits[1])
    return {u: {d for d in ds if d in parts} for u, ds in parts.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one part (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def upward(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    """(part, imported part) pairs that break the declared order, and parts it does not list."""
    rank = {name: i for i, name in enumerate(ORDER)}
    bad = []
    for part, deps in sorted(g.items()):
        for dep in sorted(deps):
            if rank.get(dep, -1) <= rank.get(part, len(ORDER)):
                bad.append((part, dep))
    return bad


def main() -> int:
    """Print the graph, its cycles and its upward imports; with --check, fail on either."""
    g = graph()
    for part in sorted(g, key=lambda p: ORDER.index(p) if p in ORDER else -1):
        print(f"{part:18s} -> {', '.join(sorted(g[part])) or '-'}")
    loops = cycles(g)
    bad = upward(g)
    unlisted = sorted(p for p in g if p not in ORDER)
    print("cycles:", "; ".join(" <-> ".join(c) for c in loops) if loops else "none")
    print("upward imports:", ", ".join(f"{a} -> {b}" for a, b in bad) if bad else "none")
    if unlisted:
        print("parts missing from ORDER:", ", ".join(unlisted))
    failed = bool(loops or bad or unlisted)
    return 1 if failed and "--check" in sys.argv else 0


if __name__ == "__main__":
    sys.exit(main())
