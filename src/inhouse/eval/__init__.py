"""Evaluate a fine-tuned model: metrics over its answers and its token predictions."""
