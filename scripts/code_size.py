#!/usr/bin/env python3
"""Lines per file and per function of the package (and benchmarks, scripts), longest first.

    python scripts/code_size.py [--top N] [--max-function L] [--check]

A function's length is its source lines from `def` to its last line, decorators and docstring
included, nested functions counted inside the one that holds them. `--check` exits 1 when a
function outside tests/ is longer than --max-function (60).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREES = ("reveal_release", "benchmarks", "scripts")


def functions(path: Path) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function and method in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: list[tuple[str, int]] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                out.append((prefix + child.name, child.end_lineno - first + 1))
                walk(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".")

    walk(tree, "")
    return out


def files() -> list[Path]:
    """The Python files measured."""
    return sorted(p for tree in TREES for p in (REPO / tree).rglob("*.py"))


def main() -> int:
    """Print the longest files and functions; with --check, fail on a function over the limit."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--max-function", type=int, default=60)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    sizes = [(len(p.read_text(encoding="utf-8").splitlines()), p) for p in files()]
    funcs = [(n, f"{p.relative_to(REPO)}::{name}") for p in files() for name, n in functions(p)]
    sizes.sort(reverse=True)
    funcs.sort(reverse=True)
    print(f"{len(sizes)} files, {sum(n for n, _ in sizes)} lines, {len(funcs)} functions")
    print(f"longest files (top {args.top}):")
    for n, p in sizes[: args.top]:
        print(f"  {n:5d}  {p.relative_to(REPO)}")
    print(f"longest functions (top {args.top}):")
    for n, where in funcs[: args.top]:
        print(f"  {n:5d}  {where}")
    over = [(n, w) for n, w in funcs if n > args.max_function]
    print(f"functions over {args.max_function} lines: {len(over)}")
    for n, where in over:
        print(f"  {n:5d}  {where}")
    return 1 if over and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
