"""Small helpers for writing test data."""

import json


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def chat(user, assistant, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    return {"messages": msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}
