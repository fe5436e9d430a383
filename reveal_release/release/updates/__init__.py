"""Update rules behind one registry: `lora` (O-LoRA training) and `r2f` (decoded gradients)."""

from reveal_release.release.updates import lora, r2f  # noqa: F401
from reveal_release.release.updates.base import UPDATES, RoundInputs, UpdateRule

__all__ = ["UPDATES", "RoundInputs", "UpdateRule"]
