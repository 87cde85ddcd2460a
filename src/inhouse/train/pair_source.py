"""Where DPO's preference pairs come from: the one place training, evaluation and jobs read a pair file,
through the data layer's reader (OpenAI's preference JSONL and prompt/chosen/rejected, tables too)."""

from __future__ import annotations

from pathlib import Path

from inhouse.data.preference import PreferencePair
from inhouse.data.preference_formats import is_preference_file, load_pairs
from inhouse.errors import InhouseError


def is_pair_file(path: Path) -> bool:
    """Whether the file holds preference pairs; a file that cannot be read at all is not (its reader says why)."""
    try:
        return is_preference_file(path)
    except InhouseError:
        return False


def read_pair_file(path: Path) -> list[PreferencePair]:
    """Every pair of the file; any problem stops the read in one line naming file:line and the check to run."""
    return load_pairs(path)
