"""Load a model from an embedded alias, a local folder, a .gguf file or a hub id."""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reveal_release.devices import pick_device
from reveal_release.embedded_models import DEFAULT_MODEL, EMBEDDED
from reveal_release.errors import RRError
from reveal_release.model_cache import build_entry, cache_root, entry_for, file_sha256

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_PATTERNS = ("*.safetensors",)
TOKENIZER_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
# Used only when a tokenizer ships no chat template (base models such as Gemma-3-270M).
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}Question: {{ m['content'] }}\n"
    "{% else %}Answer: {{ m['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Answer:{% endif %}"
)
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>", "<eos>")


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec points: a folder transformers can load, and how it got there."""

    spec: str
    kind: str  # "embedded", "gguf", "folder" or "hub"
    folder: Path | None = None
    gguf: Path | None = None
    name: str = ""


@dataclass
class LoadedModel:
    """A model ready to use: weights, tokenizer set up for batched chat, and provenance."""

    model: Any
    tokenizer: Any
    source: ModelSource
    folder: Path
    fingerprint: str
    load_seconds: float
    built_cache: bool = False
    stop_token_ids: list[int] = field(default_factory=list)

    @property
    def device(self) -> Any:
        """The device the weights live on."""
        return next(self.model.parameters()).device

    @classmethod
    def bare(cls, model: Any, tokenizer: Any) -> LoadedModel:
        """A model and tokenizer in hand (no provenance), e.g. to generate with weights in flux."""
        return cls(model, tokenizer, ModelSource("", "memory"), Path("."), "", 0.0,
                   stop_token_ids=stop_token_ids(tokenizer))  # fmt: skip


def resolve(spec: str | None) -> ModelSource:
    """Turn a user's model spec into a ModelSource, with a clear error for bad input."""
    spec = (spec or DEFAULT_MODEL).strip()
    if spec in EMBEDDED:
        gguf = EMBEDDED[spec].gguf_path(cache_root())
        return ModelSource(spec, "embedded", gguf=gguf, name=spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise RRError(
                f"{spec} is a folder but not a model folder (no config.json): "
                "pass a transformers model folder, a .gguf file, an embedded alias or a hub id"
            )
        return ModelSource(spec, "folder", folder=path.resolve(), name=path.resolve().name)
    if path.is_file():
        if not _is_gguf(path):
            raise RRError(
                f"{spec} is neither a GGUF file nor a model folder: "
                "pass a .gguf file, a folder with config.json and safetensors, "
                "an embedded alias or a hub id"
            )
        return ModelSource(spec, "gguf", gguf=path.resolve(), name=path.stem)
    looks_like_path = (
        spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or os.sep * 2 in spec
    )
    if looks_like_path:
        raise RRError(f"no such file or folder: {spec} (check the path)")
    if HUB_ID.match(spec):
        return ModelSource(spec, "hub", name=spec.replace("/", "--"))
    raise RRError(
        f"unknown model '{spec}': use an embedded alias ({', '.join(EMBEDDED)}), "
        "a local folder, a .gguf file or a hub id such as org/name (`rr models` lists them)"
    )


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def _hub_folder(repo_id: str) -> Path:
    """Download (or find in the local hub cache) a hub model's safetensors and configs."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=repo_id, allow_patterns=TOKENIZER_FILES))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean the same
        raise RRError(
            f"could not get '{repo_id}' from the Hugging Face hub ({type(exc).__name__}; "
            "offline or no such model?): download it where the hub is reachable and pass "
            "the local folder, or use an embedded alias"
        ) from None


def folder_fingerprint(folder: Path) -> str:
    """A transformers folder's identity: the hash of its config and of every weight file."""
    weights = sorted(p for pat in WEIGHT_PATTERNS for p in folder.glob(pat))
    if not weights:
        if any(folder.glob("*.bin")) or any(folder.glob("*.pt")):
            raise RRError(
                f"{folder} holds only pickled weights (.bin/.pt); rr loads safetensors only "
                "for safety: convert them with save_pretrained(safe_serialization=True)"
            )
        raise RRError(f"{folder} has no *.safetensors weights: it is not a complete model folder")
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for w in weights:
        digest.update(w.name.encode() + file_sha256(w).encode())
    return "sha256:" + digest.hexdigest()


def _gguf_folder(source: ModelSource, progress: bool) -> tuple[Path, str, bool]:
    """The cached safetensors folder of a GGUF model, built (or rebuilt) when needed."""
    entry = entry_for(source.gguf, source.name)
    built = False
    if not entry.is_complete():
        if entry.path.exists():
            _say(progress, f"cache entry {entry.path} is incomplete or corrupt: rebuilding it")
            entry.remove()
        _say(progress, f"dequantising {source.gguf.name} once into {entry.path} ...")
        try:
            build_entry(entry, source.gguf)
        except RRError:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken GGUF fails deep inside transformers
            if out_of_memory(exc):
                raise _memory_error(source.gguf, exc) from None
            raise RRError(
                f"could not read GGUF {source.gguf} ({type(exc).__name__}: {exc}): "
                "is the file complete? try downloading it again"
            ) from None
        built = True
    return entry.path, "sha256:" + entry.source_sha256, built


def _say(progress: bool, msg: str) -> None:
    if progress:
        from reveal_release.console import say

        say(msg)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding, a pad token and a chat template, as batched generation needs."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    return tokenizer


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end a turn: eos and the end-of-turn markers the vocabulary has."""
    vocab = tokenizer.get_vocab()
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return sorted(ids)


def load_dtype(device: str, dtype: str | None, kind: str = "folder") -> Any:
    """The dtype asked for, else float32 for a dequantised GGUF (its weights sit exactly on its
    quantisation grid only in fp32, and the release keeps that grid), else bf16 on a CUDA device
    that has it, else float32."""
    import torch

    if dtype is not None:
        return getattr(torch, dtype)
    if kind in ("embedded", "gguf"):
        return torch.float32
    use_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
    return torch.bfloat16 if use_bf16 else torch.float32


def _from_folder(folder: Path, dtype: Any, trust_remote_code: bool) -> tuple[Any, Any]:
    """Model (safetensors only) and tokenizer from a transformers folder; weights the folder
    lacks are an error, never a silent random initialisation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # rr reports a bad folder in its own words
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code,
            output_loading_info=True,
        )  # fmt: skip
    finally:
        hf_logging.set_verbosity(level)
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        raise RRError(
            f"the weights in {folder} lack {len(missing)} of the tensors its config.json "
            f"describes (first: {missing[0]}): the folder is incomplete or its config does "
            "not match its weights; copy the whole model folder again"
        )
    return model, AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)


def _load_error(folder: Path, exc: Exception) -> RRError:
    if "ignore_mismatched_sizes" in str(exc):
        return RRError(
            f"could not load the model in {folder}: the shapes of its weights do not match its "
            "config.json; copy the whole model folder again"
        )
    if "trust_remote_code" in str(exc):
        hint = "it may need custom code; pass --trust-remote-code if you trust it"
    else:
        hint = "check that it is a whole transformers model folder (config.json, the tokenizer"
        hint += " and *.safetensors) or copy it again"
    return RRError(
        f"could not load the model in {folder} ({type(exc).__name__}: {_first_line(exc)}): {hint}"
    )


def load_model(
    spec: str | None = None,
    *,
    device: str = "auto",
    dtype: str | None = None,
    trust_remote_code: bool = False,
    progress: bool = False,
) -> LoadedModel:
    """Load a model and tokenizer from an alias, folder, .gguf file or hub id."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    source = resolve(spec)
    built = False
    if source.kind in ("embedded", "gguf"):
        folder, fingerprint, built = _gguf_folder(source, progress)
    else:
        folder = source.folder if source.kind == "folder" else _hub_folder(source.spec)
        fingerprint = folder_fingerprint(folder)
    device = pick_device(device)
    torch_dtype = load_dtype(device, dtype, source.kind)
    try:
        model, tokenizer = _from_folder(folder, torch_dtype, trust_remote_code)
    except RRError:
        raise
    except Exception as exc:  # noqa: BLE001
        if out_of_memory(exc):  # the entry is fine: keep it
            raise _memory_error(folder, exc) from None
        if source.kind not in ("embedded", "gguf") or built:
            raise _load_error(folder, exc) from None
        # A cache entry that looked complete but does not load: rebuild it once.
        _say(progress, f"cached model in {folder} does not load ({type(exc).__name__}): rebuilding")
        entry_for(source.gguf, source.name).remove()
        folder, fingerprint, built = _gguf_folder(source, progress)
        model, tokenizer = _from_folder(folder, torch_dtype, trust_remote_code)
    model.to(device)
    model.eval()
    prepare_tokenizer(tokenizer)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        source=source,
        folder=Path(folder),
        fingerprint=fingerprint,
        load_seconds=time.perf_counter() - start,
        built_cache=built,
        stop_token_ids=stop_token_ids(tokenizer),
    )


OUT_OF_MEMORY = ("can't allocate memory", "cannot allocate memory", "out of memory")


def out_of_memory(exc: BaseException) -> bool:
    """Whether an exception says the process ran out of memory (Python's, torch's, mmap's)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or any(m in text for m in OUT_OF_MEMORY)


def _memory_error(what: Path, exc: Exception) -> RRError:
    return RRError(
        f"not enough memory to load {what} ({_first_line(exc)}): free memory or give the "
        "process more, then run the command again"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def model_summary(loaded: LoadedModel) -> dict:
    """A JSON-able description of a loaded model for manifests."""
    cfg = loaded.model.config
    return {
        "spec": loaded.source.spec,
        "kind": loaded.source.kind,
        "folder": str(loaded.folder),
        "fingerprint": loaded.fingerprint,
        "architecture": (cfg.architectures or [type(loaded.model).__name__])[0],
        "parameters": sum(p.numel() for p in loaded.model.parameters()),
        "dtype": str(next(loaded.model.parameters()).dtype).replace("torch.", ""),
    }
