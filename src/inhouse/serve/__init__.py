"""`inhouse serve`: an OpenAI-compatible HTTP API over the same functions as the CLI."""
