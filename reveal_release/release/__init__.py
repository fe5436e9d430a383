"""Release: iterative O-LoRA unlearning rounds, merge and export."""
