"""`rr eval --out`: which folders a report may be written into (checked before any work)."""

from __future__ import annotations

from pathlib import Path

from reveal_release.errors import RRError

PLOT_FILES = ("rounds.png", "bandit.png", "tradeoff.png", "attacks.png")  # plots.PLOTS
REPORT_FILES = ("metrics.json", "cache.json", "report.md", "report.html", *PLOT_FILES)


def check_report_folder(out: Path) -> None:
    """`--out` of `rr eval`: a new or empty folder, or a report folder rr wrote before (its
    files are replaced); anything else is an error before any work."""
    if out.is_symlink():
        raise RRError(f"{out} is a symbolic link: give --out a plain folder path")
    if out.exists() and not out.is_dir():
        raise RRError(f"{out} is a file, not a folder: choose a new --out folder")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
        if other and not (out / "metrics.json").is_file():
            raise RRError(
                f"{out} holds files rr did not write ({', '.join(other[:3])}): choose a new or "
                "empty --out folder"
            )
