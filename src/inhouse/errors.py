"""The one exception type users see.

Anything raised as `InhouseError` is printed by the CLI as a single line
(what, where, how to fix) with exit code 1; a traceback only with --debug.
"""


class InhouseError(Exception):
    """An error the user can act on; its message is the whole story."""
