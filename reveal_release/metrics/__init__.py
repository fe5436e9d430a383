"""Measurements of one model: held-out reveal rate, QA, perplexity, fluency, likelihoods, MIA
scores and weight quantisers. Release measures its rounds and `rr eval` its models with them."""
