"""`inhouse data prepare` over HTTP: the uploaded file in, new uploaded files (the splits) out."""

from __future__ import annotations

import io
from typing import Any

from pydantic import ConfigDict

from inhouse import atomic
from inhouse.data.prepare import PrepareConfig, prepare, to_record
from inhouse.jobs import files
from inhouse.jobs.store import Store
from inhouse.serve import openai


class PrepareRequest(PrepareConfig):
    """The preparation options, minus those that name files on the server (schema_file) or pick a
    tokenizer by path (model: lengths are counted with the served base model)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    def model_post_init(self, context: Any) -> None:
        if self.schema_file is not None:
            raise openai.Unsupported("schema_file", "give the schema's rules in 'rules' over HTTP")
        if "model" in self.model_fields_set:
            raise openai.Unsupported("model", "lengths are counted with the served base model's tokenizer")


def prepare_upload(store: Store, file_id: str, body: PrepareRequest, base_ref: str) -> dict[str, Any]:
    row = store.get("files", file_id, "file")
    config = PrepareConfig(**{**body.model_dump(exclude={"model"}), "model": base_ref})
    prepared = prepare(files.blob(row["sha256"]), config)
    stem = row["filename"].rsplit(".", 1)[0]
    out = {}
    for split in ("train", "validation", "test"):
        convs = getattr(prepared, split)
        if convs:
            data = "".join(atomic.dumps(to_record(c)) + "\n" for c in convs).encode()
            saved = files.save_upload(store, io.BytesIO(data), f"{stem}.{split}.jsonl", "fine-tune", len(data))
            out[split] = openai.file_object(saved)
    removed = prepared.counts["examples_removed"]
    changes = [{"step": e.step, "action": e.action, "where": e.where.replace(str(files.blob(row["sha256"])),
                                                                            row["filename"]), "reason": e.reason}
               for e in prepared.events]
    return {"counts": prepared.counts, "removed": removed, "changed": prepared.counts["examples_changed"],
            "changes": changes[:500], "files": out}
