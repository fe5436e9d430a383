"""reveal-release: make a language model forget a target without the data it learned it from."""

__version__ = "0.1.0"
