"""The attacks `rr eval` knows, in report order (a plain list the command line imports cheaply)."""

ALL_ATTACKS = ("relearn", "quant-int8", "quant-int4", "rephrase", "jailbreak", "mia")
