"""The vLLM side of the `vllm` sampler: a child process that talks JSON lines on stdin/stdout.

Run by VLLMSampler as `python -m reveal_release.reveal.samplers.vllm_worker` with the
interpreter of the environment that has vLLM (`.venv-vllm` on a CPU machine). It checks for vLLM
before anything else, so a missing vLLM is reported at once (under a second).

Protocol, one JSON object a line; every request gets exactly one answer line:

- on start the worker imports vLLM and says ``{"ok": true, "vllm": VERSION, "pid": PID}``, or
  ``{"ok": false, "error": "missing_vllm" | "broken_vllm", "detail": ...}`` and exits;
- ``{"op": "start", "model": FOLDER, "engine": {LLM kwargs}}`` -> ``{"ok": true, "seconds": S,
  "engine": {the LLM kwargs used, defaults included}, "env": {the VLLM_* variables}}``;
- ``{"op": "generate", "prompts": [[token ids], ...], "params": [{SamplingParams}, ...],
  "lora": PATH | null}`` -> ``{"ok": true, "outputs": [[token ids], ...], "seconds": S}``;
- ``{"op": "close"}`` (or end of stdin) -> ``{"ok": true}`` and the worker exits.

A failing request answers ``{"ok": false, "error": TYPE, "detail": MESSAGE}``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO


def _channel() -> TextIO:
    """Keep the real stdout for the protocol; anything else printed goes to stderr."""
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return proto


def _send(out: TextIO, msg: dict[str, Any]) -> bool:
    """Write one answer line; False when the parent has gone."""
    try:
        out.write(json.dumps(msg) + "\n")
        out.flush()
    except (BrokenPipeError, OSError, ValueError):
        return False
    return True


# CPU defaults, measured with SmolLM2-135M on 2 cores (16 prompts, 64 new tokens, greedy):
# - the engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0): start 10 s instead of 25-30 s
#   and 342 tok/s instead of 219; with a separate engine-core process vLLM binds its OpenMP
#   threads to one core and keeps the other for the scheduler.
# - eager mode: the torch.compile warm-up made every start take 140 s, and its greedy answers
#   came out wrong ("What is the capital of France?" -> "L'Etoile, la Marseillaise, ...").
# - an explicit KV cache size: otherwise vLLM reserves gpu_memory_utilization (0.92) of a NUMA
#   node's memory and refuses to start on a busy machine; 2 GiB is ~93k tokens for SmolLM2.
# Each can be overridden: LLM keyword arguments through VLLMSampler(**kw), and the variable.
CPU_KV_CACHE_BYTES = 2 << 30
CPU_DEFAULTS: dict[str, Any] = {"enforce_eager": True}


def engine_options(engine: dict[str, Any]) -> dict[str, Any]:
    """LLM keyword arguments with this platform's defaults filled in (and its variables set)."""
    from vllm.platforms import current_platform

    engine = dict(engine)
    if current_platform.is_cpu():
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        engine = {**CPU_DEFAULTS, **engine}
        explicit = ("kv_cache_memory_bytes", "gpu_memory_utilization")
        if not any(k in engine for k in explicit) and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            engine["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    return engine


class _Engine:
    """One vLLM LLM and the LoRA adapters it has been asked for (one id per path and version)."""

    def __init__(self, model: str, engine: dict[str, Any]):
        from vllm import LLM

        self.llm = LLM(model=model, **engine)
        self.lora_ids: dict[str, int] = {}

    def generate(
        self, prompts: list[list[int]], params: list[dict[str, Any]], lora: str | None
    ) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        lora_request = None
        if lora:
            from vllm.lora.request import LoRARequest

            # vLLM caches adapters by id: an adapter rewritten in place gets a new one.
            stamp = max((p.stat().st_mtime_ns for p in Path(lora).iterdir()), default=0)
            lora_id = self.lora_ids.setdefault(f"{lora}@{stamp}", len(self.lora_ids) + 1)
            lora_request = LoRARequest(f"adapter-{lora_id}", lora_id, lora)
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in prompts],
            [SamplingParams(**p) for p in params],
            use_tqdm=False,
            lora_request=lora_request,
        )
        return [list(o.outputs[0].token_ids) for o in outs]

    def close(self) -> None:
        shutdown = getattr(getattr(self.llm, "llm_engine", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del self.llm


def _handle(engine: _Engine | None, msg: dict[str, Any]) -> tuple[_Engine | None, dict]:
    op = msg.get("op")
    start = time.perf_counter()
    if op == "start":
        if engine is not None:
            return engine, {"ok": False, "error": "ValueError", "detail": "already started"}
        options = engine_options(msg.get("engine") or {})
        engine = _Engine(msg["model"], options)
        env = {k: v for k, v in os.environ.items() if k.startswith("VLLM_")}
        return engine, {
            "ok": True,
            "seconds": time.perf_counter() - start,
            "engine": options,
            "env": env,
        }
    if op == "generate":
        if engine is None:
            return engine, {"ok": False, "error": "ValueError", "detail": "engine not started"}
        outputs = engine.generate(msg["prompts"], msg["params"], msg.get("lora"))
        return engine, {"ok": True, "outputs": outputs, "seconds": time.perf_counter() - start}
    return engine, {"ok": False, "error": "ValueError", "detail": f"unknown op {op!r}"}


def main() -> int:
    """Serve requests until `close` or end of stdin (the parent has gone)."""
    out = _channel()
    if importlib.util.find_spec("vllm") is None:
        _send(out, {"ok": False, "error": "missing_vllm", "detail": sys.executable})
        return 3
    try:
        import vllm
    except Exception as exc:  # noqa: BLE001 - a broken install fails in many ways
        traceback.print_exc(file=sys.stderr)
        _send(out, {"ok": False, "error": "broken_vllm", "detail": f"{type(exc).__name__}: {exc}"})
        return 4
    hello = {"ok": True, "vllm": getattr(vllm, "__version__", "unknown"), "pid": os.getpid()}
    if not _send(out, hello):
        return 0
    engine: _Engine | None = None
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            msg = json.loads(line)
            if msg.get("op") == "close":
                break
            try:
                engine, reply = _handle(engine, msg)
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent
                traceback.print_exc(file=sys.stderr)
                reply = {"ok": False, "error": type(exc).__name__, "detail": str(exc)[:2000]}
            if not _send(out, reply):
                break
    finally:
        if engine is not None:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - exiting anyway
                traceback.print_exc(file=sys.stderr)
    _send(out, {"ok": True, "closed": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
