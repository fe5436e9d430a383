"""Measurement primitives: held-out reveal rate, general QA accuracy and plain-text perplexity."""
