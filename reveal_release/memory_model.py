"""How many bytes one update needs: weights, gradients, optimiser state and activations, for full
fine-tuning, LoRA and R2F, on one device or sharded over several (FSDP), from a model's shape.

The per-parameter bytes of full fine-tuning in mixed precision are ZeRO's (Rajbhandari et al.
2020, arXiv 1910.02054): 2 (bf16 weights) + 2 (bf16 gradients) + 12 (fp32 master weights and
Adam's two moments) = 16. LoRA keeps the base frozen in bf16 and trains fp32 factors (4 + 4 +
8 bytes each). R2F keeps no weight gradients and no optimiser state: the weights, a copy of
the adapted layers' original weights (its module is fitted to the round's change, and the KL
retain term swaps them in for the base's distributions), the inputs of each adapted layer it
keeps for the decoder's basis, and one layer's decoded gradient at a time.
Activations are those a Llama layer saves for its backward pass (fused attention: no score
matrix), or, with gradient checkpointing, each layer's input plus one layer recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    """A Llama-shaped decoder: sizes as in its config.json."""

    name: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False

    @property
    def kv_dim(self) -> int:
        """Width of the key (and value) projection's output."""
        return self.hidden // self.heads * self.kv_heads

    def linears(self) -> list[tuple[int, int]]:
        """(d_in, d_out) of one layer's projections."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    def params(self) -> int:
        """Every parameter: embeddings, projections, norms, and the head unless tied."""
        per_layer = sum(a * b for a, b in self.linears()) + 2 * self.hidden
        head = 0 if self.tied else self.vocab * self.hidden
        return self.vocab * self.hidden + self.layers * per_layer + self.hidden + head

    def lora_params(self, rank: int) -> int:
        """A rank-r module on every projection of every layer."""
        return self.layers * sum(rank * (a + b) for a, b in self.linears())

    def saved_per_token(self, elem: int) -> int:
        """Bytes one layer saves per token for its backward pass: the norms' and projections'
        inputs, q, k and v, the attention output, and the MLP's gate, up, activation and product."""
        h, i, kv = self.hidden, self.intermediate, self.kv_dim
        return elem * (5 * h + 2 * kv + 4 * i)


@dataclass(frozen=True)
class Setting:
    """One update as a release step makes it."""

    rows: int = 4  # forget rows per batch; the retain batch has as many
    tokens: int = 256  # tokens per row
    rank: int = 8  # LoRA rank
    views: int = 4  # R2F views (each a copy of the forget rows)
    views_per_pass: int = 0  # views in one forward and backward pass (0: all of them)
    keep_inputs: int = 2048  # input rows R2F keeps per layer for the decoder's basis
    elem: int = 2  # bytes of a weight and an activation: 2 (bf16, GPU) or 4 (fp32, CPU)
    checkpointing: bool = False
    devices: int = 1  # FSDP full sharding over this many devices (1: no sharding)
    runtime: float = 0.0  # bytes of the framework itself (CUDA context, libraries)


def update_bytes(shape: Shape, method: str, s: Setting) -> dict[str, float]:
    """Bytes per device of one update, by part (and their total)."""
    p, n, inputs = shape.params(), s.devices, 0
    if method == "full":
        state = {"weights": s.elem * p, "gradients": s.elem * p}
        state["optimiser"] = (12 if s.elem == 2 else 8) * p  # fp32 master (bf16 only) + moments
        rows = 2 * s.rows
    elif method == "lora":
        q = shape.lora_params(s.rank)
        state = {"weights": s.elem * p + 4 * q, "gradients": 4 * q, "optimiser": 8 * q}
        rows = 2 * s.rows
    elif method == "r2f":
        biggest = max(a * b for a, b in shape.linears())
        kept = min(s.keep_inputs, s.views * s.rows * s.tokens)
        inputs = 4 * kept * sum(a for a, _ in shape.linears()) * shape.layers
        state = {"weights": s.elem * p, "gradients": 4 * biggest, "optimiser": 0}
        state["originals"] = s.elem * shape.layers * sum(a * b for a, b in shape.linears())
        rows = ((s.views_per_pass or s.views) + 1) * s.rows
    else:
        raise ValueError(f"unknown method {method!r}: full, lora or r2f")
    state = {k: v / n for k, v in state.items()}  # FSDP shards weights, gradients and state
    if method == "r2f":  # each device keeps its own rows' inputs, and decodes whole layers
        state["gradients"] *= n
        state["inputs"] = inputs
    if n > 1:  # one layer's weights gathered whole at a time, and the next one prefetched
        state["gathered layer"] = 2 * s.elem * sum(a * b for a, b in shape.linears())
    tokens = rows * s.tokens
    per_layer = shape.saved_per_token(s.elem) * tokens
    if s.checkpointing:
        act = s.elem * shape.hidden * tokens * shape.layers + per_layer
    else:
        act = per_layer * shape.layers
    state["activations"] = act + 3 * 4 * tokens * shape.vocab  # + fp32 logits and their grads
    state["runtime"] = s.runtime
    state["total"] = sum(state.values())
    return state


# Sizes from the models' config.json on the Hugging Face hub.
LLAMA_8B = Shape("Llama-3-8B", 4096, 14336, 32, 32, 8, 128256)
LLAMA_70B = Shape("Llama-3-70B", 8192, 28672, 80, 64, 8, 128256)
