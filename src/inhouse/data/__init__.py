"""Data: load a team's files into conversations, validate, and report problems."""
