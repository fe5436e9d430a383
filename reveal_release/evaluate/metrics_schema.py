"""The shape of a report's metrics.json, as far as the report reads it: `rr eval
--report-only` checks a stored file against it before drawing anything."""

from __future__ import annotations

from reveal_release.schema import NUMBER, OPTIONAL_NUMBER, Each

_MODEL = {
    "heldout": {"rate": NUMBER, "mean_score": OPTIONAL_NUMBER},
    "knowledge": {"accuracy?": OPTIONAL_NUMBER},
    "utility": {
        "qa_accuracy": OPTIONAL_NUMBER,
        "perplexity": OPTIONAL_NUMBER,
        "qa_left_out?": list,
    },
    "fluency": {"repetition_rate": OPTIONAL_NUMBER, "nll_under_base?": OPTIONAL_NUMBER},
}
_RESULT = {
    "skipped?": str, "auc?": NUMBER, "reveal_rate?": NUMBER, "members?": int,
    "nonmembers?": int, "samples?": int, "steps?": int, "lr?": NUMBER,
    "perplexity?": OPTIONAL_NUMBER, "qa_accuracy?": OPTIONAL_NUMBER,
    "codes_changed?": OPTIONAL_NUMBER, "unchanged?": bool,
}  # fmt: skip
_ATTACK = {
    "description?": str, "skipped?": str, "base?": _RESULT, "released?": _RESULT,
    "recovery?": OPTIONAL_NUMBER,
}  # fmt: skip
_ROUND = {
    "round": int, "heldout_reveal_rate": NUMBER, "retain_accuracy": OPTIONAL_NUMBER,
    "perplexity": OPTIONAL_NUMBER, "rolled_back?": bool,
}  # fmt: skip
_ANSWER = {"response": str, "score": NUMBER}

METRICS_SCHEMA = {
    "target": str,
    "evaluated": str,
    "probes": int,
    "seconds": NUMBER,
    "cache": {"computed": int, "hits": int},
    "labels?": Each(str),
    "notes?": [str],
    "models": {"base?": _MODEL, "released?": _MODEL},
    "attacks?": Each(_ATTACK),
    "rounds?": [_ROUND],
    "baseline_ga?": {
        "skipped?": str,
        "points?": [
            {"step": int, "reveal_rate": NUMBER, "qa_accuracy": NUMBER, "loss": OPTIONAL_NUMBER}
        ],  # fmt: skip
    },
    "examples?": [{"prompt": str, "base?": _ANSWER, "released?": _ANSWER}],
    "bandit?": [{"round": int, "step": int, "reward": NUMBER}],
    "provenance?": {
        "gguf?": (str, type(None)),
        "spec?": str,
        "gguf_formats?": Each(int),
        "on_grid?": Each(OPTIONAL_NUMBER),
    },  # fmt: skip
}
