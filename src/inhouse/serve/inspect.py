"""What the data page shows about an uploaded file: the checks of `inhouse data check`, token lengths
as a histogram, every problem with its line and field, and examples with the trained tokens marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inhouse.errors import InhouseError

PREVIEWS = 3
BINS = 20
SHOWN_PROBLEMS = 500


def inspect_file(path: Path, filename: str, tokenizer: Any, stop_ids: set[int]) -> dict[str, Any]:
    from inhouse.data.formats import load_dataset
    from inhouse.model.template import TemplateError, mask_segments, token_counter

    try:
        result = load_dataset(path)
    except InhouseError as e:
        return {"error": str(e).replace(str(path), filename)}
    count = token_counter(tokenizer)
    lengths, previews = [], []
    for conv in result.conversations:
        try:
            lengths.append(count(conv))
            if len(previews) < PREVIEWS:
                previews.append({"line": conv.line, "segments": [{"text": t, "trained": m} for t, m in
                                                                 mask_segments(conv, tokenizer, stop_ids)]})
        except TemplateError as e:
            return {"error": str(e).replace(str(path), filename)}
    return {"filename": filename, "format": result.format, "examples": result.total,
            "valid": len(result.conversations), "histogram": histogram(lengths),
            "tokens": {"min": min(lengths), "max": max(lengths), "total": sum(lengths)} if lengths else None,
            "problems": [{"line": p.line, "code": p.code, "field": p.field, "message": p.message}
                         for p in result.problems[:SHOWN_PROBLEMS]],
            "problem_count": len(result.problems), "previews": previews}


def histogram(lengths: list[int], bins: int = BINS) -> list[dict[str, int]]:
    """Equal-width bins of token lengths: [{from, to, count}]."""
    if not lengths:
        return []
    low, high = min(lengths), max(lengths)
    width = max(1, -(-(high - low + 1) // bins))
    counts = [0] * (-(-(high - low + 1) // width))
    for n in lengths:
        counts[(n - low) // width] += 1
    return [{"from": low + i * width, "to": low + (i + 1) * width - 1, "count": c} for i, c in enumerate(counts)]
