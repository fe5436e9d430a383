"""The O-LoRA orthogonality term and the optional L2 term on round k's parameters.

    L_orth = sum over modules m and earlier rounds j < k of  sum_ij |(A_j^m (A_k^m)^T)_ij|

the L1 form of the official O-LoRA code (the paper writes squares); A is r x d_in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def orth_penalty(current: Mapping[str, Any], earlier: Sequence[Mapping[str, Any]]) -> Any:
    """Sum of |A_j A_k^T| over modules and earlier rounds (0 when there are none)."""
    total = None
    for prev in earlier:
        for name, a_k in current.items():
            a_j = prev.get(name)
            if a_j is None:
                continue
            term = (a_j.to(a_k.device, a_k.dtype) @ a_k.T).abs().sum()
            total = term if total is None else total + term
    if total is None:
        import torch

        return torch.zeros(())
    return total


def l2_penalty(params: Mapping[str, Any]) -> Any:
    """Squared L2 norm of round k's parameters."""
    return sum(p.pow(2).sum() for p in params.values())
