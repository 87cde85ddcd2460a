"""Every key of an example is used, known to be harmless metadata, or reported: never silently dropped.

Some files look trainable but carry meaning the supervised loader would throw away: preference pairs
(read by `preference_formats` for DPO, refused here for supervised training), binary feedback labels,
images or audio, or simply a field of content nobody expected. Each gets a problem naming the line and
what is not supported; `data prepare` refuses such a file instead of writing splits without it.
"""

from __future__ import annotations

from typing import Any

# Fields that describe an example without being part of what is trained on.
HARMLESS = frozenset({"id", "idx", "uuid", "source", "dataset", "split", "task", "tags", "metadata", "meta", "lang",
                      "language", "url", "timestamp", "created_at", "score", "difficulty", "topic",
                      "markdown"})  # markdown: the ShareGPT site's rendered copy of the same text
PREFERENCE = ("chosen", "rejected", "preferred_output", "non_preferred_output")
MEDIA = ("images", "image", "videos", "video", "audios", "audio")
# Problems that mean "this file holds something inhouse cannot train on yet": prepare refuses the file.
UNSUPPORTED = frozenset({"preference_data", "feedback_label", "multimodal_content", "unrecognized_key"})


class KeyProblem(Exception):
    def __init__(self, code: str, fld: str, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, fld, message


def check_example(obj: dict[str, Any], used: frozenset[str] | set[str]) -> None:
    """Refuse preference (unless `used` reads it), feedback and media data by name, and any other key that
    is neither used nor harmless metadata."""
    if preference := [k for k in PREFERENCE if k in obj and k not in used]:
        raise KeyProblem("preference_data", preference[0], preference_refusal(", ".join(preference)))
    if "label" in obj and isinstance(obj["label"], bool):
        raise KeyProblem("feedback_label", "label", "a true/false 'label' is binary feedback (KTO-style data): "
                         "supervised training would train on the bad answers too; this is not supported")
    if media := [k for k in MEDIA if k in obj]:
        raise KeyProblem("multimodal_content", media[0], f"'{media[0]}': images, audio and video are not "
                         "supported (text models only)")
    for key in obj:
        if key not in used and key not in HARMLESS:
            raise KeyProblem("unrecognized_key", key, f"unknown field {key!r} would be dropped; remove it, or "
                             f"rename it if it holds the text to train on (this format uses: {', '.join(sorted(used))})")


def preference_refusal(what: str) -> str:
    """Why a preference pair cannot train as a conversation, and the fix; shared by the per-line problem
    and the one-line refusal of a whole preference file."""
    return (f"this is preference data ({what}): train it with `method: dpo` in the recipe; supervised "
            "training (lora, qlora, full) reads conversations and would drop the rejected answers")


def check_part(part: Any, where: str) -> str:
    """One item of a message's content list: its text, or a problem for media."""
    if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return part["text"]
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    if kind in ("image_url", "image", "input_audio", "audio", "video", "file", "input_image", "input_file"):
        raise KeyProblem("multimodal_content", where, f"content of type {kind!r}: images, audio and files are not "
                         "supported (text models only)")
    raise KeyProblem("wrong_type", where, f"a content part must be {{'type': 'text', 'text': ...}}, got {kind!r}")
