"""The exceptions users see, by category.

Anything raised as `InhouseError` is printed by the CLI as a single line
(what, where, how to fix) with exit code 1; a traceback only with --debug.
The categories let the HTTP server answer with the right status code
without matching message strings: not found -> 404, conflict -> 409,
invalid input -> 400.
"""

import difflib
from collections.abc import Iterable


class InhouseError(Exception):
    """An error the user can act on; its message is the whole story."""


class NotFoundError(InhouseError):
    """A named thing (adapter, model, file, job, knowledge base) does not exist."""


class ConflictError(InhouseError):
    """The request clashes with the current state (it exists already, it is busy)."""


class InvalidInputError(InhouseError):
    """The input itself is wrong (a bad value, a bad file, an unsafe path)."""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest candidate, or nothing: the hint every "no such name" error gives."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
