"""First load (dequantise a GGUF and cache it) against a cached load, each in a fresh process.

Run: .venv/bin/python benchmarks/model_load.py [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from reveal_release.models import load_model
from reveal_release.console import peak_rss_bytes
t1 = time.perf_counter()
m = load_model(sys.argv[1], device="cpu")
print(json.dumps({"import_s": t1 - t0, "load_s": m.load_seconds, "built": m.built_cache,
                  "peak_rss": peak_rss_bytes()}))
"""


def measure(model: str, cache: str) -> dict:
    """Load the model in a child process with the given cache folder."""
    env = {**os.environ, "RR_CACHE": cache}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, model], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Print first-load and cached-load time and peak memory side by side."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        first = measure(args.model, cache)
        cached = measure(args.model, cache)
    gib = 1024**3
    print(f"model {args.model}, {os.cpu_count()} CPU cores")
    print(f"{'load':<10}{'seconds':>10}{'peak RSS GiB':>14}{'cache built':>13}")
    for name, r in (("first", first), ("cached", cached)):
        print(f"{name:<10}{r['load_s']:>10.2f}{r['peak_rss'] / gib:>14.2f}{str(r['built']):>13}")
    print(f"first / cached load time: {first['load_s'] / cached['load_s']:.1f}x")


if __name__ == "__main__":
    main()
