"""Stage 1, Reveal: make the model show what it knows about a target."""
