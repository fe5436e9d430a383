"""Targets (what to forget, what to keep) and the judges that score relevance."""
