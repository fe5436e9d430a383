"""R2F: decode full-model gradients from LoRA gradient sketches, with a decoder fit on a proxy."""
