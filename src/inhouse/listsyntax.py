"""The one syntax of list values typed on a command line: comma-separated, `\\,` for a comma.

Shared by every list flag (`--pii-kinds`, `--pii-allow`, `--weights`) and by
`--where`, so a regular expression such as `re:\\d{1\\,3}` or a title with a
comma in it can be given without a YAML file.
"""

from __future__ import annotations

import re

_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def split_list(text: str) -> list[str]:
    """'a, b\\,c' -> ['a', 'b,c']: items stripped, empty ones left out, `\\,` kept as a comma."""
    items = _UNESCAPED_COMMA.split(text)
    return [item.strip().replace("\\,", ",") for item in items if item.strip()]
