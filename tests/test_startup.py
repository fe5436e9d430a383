"""`rr` starts without loading torch or transformers, so what it refuses (a busy run folder, a
command-line mistake) it refuses at once, and `rr --help` is quick."""

from __future__ import annotations

import subprocess
import sys

from helpers import REPO


def test_the_command_line_loads_no_model_library():
    code = (
        "import sys, reveal_release.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'peft') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
