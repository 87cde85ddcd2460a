"""The exceptions users see, by category.

Anything raised as `InhouseError` is printed by the CLI as a single line
(what, where, how to fix) with exit code 1; a traceback only with --debug.
The categories let the HTTP server answer with the right status code
without matching message strings: not found -> 404, conflict -> 409,
invalid input -> 400.
"""


class InhouseError(Exception):
    """An error the user can act on; its message is the whole story."""


class NotFoundError(InhouseError):
    """A named thing (adapter, model, file, job, knowledge base) does not exist."""


class ConflictError(InhouseError):
    """The request clashes with the current state (it exists already, it is busy)."""


class InvalidInputError(InhouseError):
    """The input itself is wrong (a bad value, a bad file, an unsafe path)."""
