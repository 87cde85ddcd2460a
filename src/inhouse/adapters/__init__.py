"""Adapters: the local library of fine-tuned results, with lineage."""
