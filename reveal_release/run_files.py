"""The shapes of the JSON files a release writes into a run folder, as far as rr reads them
back: a damaged file is refused naming its key, instead of failing deep in a table."""

from __future__ import annotations

from reveal_release.schema import NUMBER, OPTIONAL_NUMBER

MEASURED = {
    "heldout_reveal_rate": NUMBER,
    "retain_accuracy": OPTIONAL_NUMBER,
    "perplexity": OPTIONAL_NUMBER,
    "retain_left_out?": list,
    "examples?": [{"prompt": str, "response": str}],
    "quant_scheme?": str,
    "quant_reveal_rate?": OPTIONAL_NUMBER,
    "quant_codes_changed?": OPTIONAL_NUMBER,
}
ROUND_METRICS = {
    **MEASURED,
    "round": int,
    "trained": bool,
    "forget_size": int,
    "train_steps": int,
    "train_seconds": NUMBER,
    "round_seconds": NUMBER,
    "peak_rss_bytes": int,
    "rolled_back?": bool,
    "ppl_ratio?": OPTIONAL_NUMBER,
    "retain_ratio?": OPTIONAL_NUMBER,
}
TRAIN_RESULT = {
    "steps": int,
    "stopped": (str, type(None)),
    "history": [dict],
    "seconds": NUMBER,
    "resumed_from": int,
}
MODEL_MARKER = {"round": int, "base_fingerprint": str, "grid?": (str, type(None))}
TRAIN_STATE = {"step": int, "history": [dict]}
