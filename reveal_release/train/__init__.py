"""The training layer: batches, answer log-probs, LoRA modules, objectives and the optimiser loop.

Release rounds, the R2F update rule, the relearning attack and the gradient-ascent baseline all
train through it; nothing here knows about runs, targets or rounds.
"""
