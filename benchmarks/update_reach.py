"""How far round updates reach: each adapter's change to the weights against its change to what
the layers output on real text, averaged over the adapted layers.

    python benchmarks/update_reach.py --rows runs/hp32/reveal/retain.jsonl \\
        runs/r2f-sweep/lora runs/r2f-sweep/r2f-step-0.0001

Each folder is a run with a round-1 adapter (a PEFT module) on the embedded model. For every
adapted layer: ||dW|| / ||W|| (weight space) and ||X dW^T|| / ||X W^T|| (output space, X the
layer's inputs over the first --n rows' prompt and answer). A gradient step concentrates on the
input directions the layer sees most; an update that reaches the weights far but the outputs
little spends its norm where the inputs are small.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from reveal_release.console import table


def layer_inputs(loaded: Any, rows: list[dict], max_length: int = 256) -> dict[str, Any]:
    """Every linear layer's inputs (tokens x d_in) over the rows' prompt and answer."""
    import torch

    from reveal_release.train.data import collate, encode

    model, tok, seen = loaded.model, loaded.tokenizer, {}

    def hook(name: str) -> Any:
        def keep(mod: Any, args: tuple, out: Any) -> None:
            seen.setdefault(name, []).append(args[0].detach().reshape(-1, args[0].shape[-1]))

        return keep

    linear = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    handles = [m.register_forward_hook(hook(n)) for n, m in linear if "lm_head" not in n]
    with torch.no_grad():
        for r in rows:
            batch = collate([encode(tok, r["prompt"], r["response"], max_length)],
                            tok.pad_token_id, model.device)  # fmt: skip
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for h in handles:
        h.remove()
    return {n: torch.cat(v).float() for n, v in seen.items()}


def reach(run: Path, weights: dict[str, Any], inputs: dict[str, Any]) -> list[tuple]:
    """Per adapted layer: (weight-space, output-space) relative size of the round's change."""
    from reveal_release.train.lora import delta_weights

    pairs = []
    for key, delta in delta_weights(run / "round-1" / "adapter").items():
        name = key.removeprefix("base_model.model.")
        w, x = weights[name + ".weight"].float(), inputs[name]
        out = float((x @ delta.float().T).norm() / (x @ w.T).norm())
        pairs.append((float(delta.norm() / w.norm()), out))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+", help="Run folders with a round-1 adapter.")
    ap.add_argument("--rows", type=Path, required=True, help="A JSONL of prompt/response rows.")
    ap.add_argument("--n", type=int, default=12, help="Rows whose tokens are the inputs.")
    args = ap.parse_args()
    from reveal_release.models import load_model

    loaded = load_model(None, device="cpu")
    lines = args.rows.read_text().splitlines()[: args.n]
    inputs = layer_inputs(loaded, [json.loads(x) for x in lines])
    weights = dict(loaded.model.named_parameters())
    rows = []
    for run in args.runs:
        pairs = reach(run, weights, inputs)
        w, o = (sum(p[i] for p in pairs) / len(pairs) for i in (0, 1))
        rows.append([run.name, f"{w:.4f}", f"{o:.4f}", f"{o / w:.1f}"])
    table("Relative change of each layer's weights and outputs, mean over layers",
          ["run", "weights", "outputs", "outputs / weights"], rows)  # fmt: skip


if __name__ == "__main__":
    main()
