"""Training: the SFT recipe, its data pipeline and progress reporting."""
