"""The web UI: pages, templates and the static files they use."""
