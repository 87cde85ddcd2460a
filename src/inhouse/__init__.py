"""inhouse: specialise an open LLM on your own data, on your own hardware."""

__version__ = "0.1.0"
