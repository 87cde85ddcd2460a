"""Export adapters and merged models to the engines that run them."""
