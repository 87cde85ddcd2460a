"""Model: load a base model (local folder, hub id, builtin:tiny), chat templates and loss masks."""
