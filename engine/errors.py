"""User-facing errors.

Anything the user can fix (a bad path, a missing column, an unknown index type,
weights that cannot be reached) raises :class:`EngineError` with one line that names
the file, row or parameter at fault. The CLI prints it as ``error: ...`` and exits 2,
with no traceback.
"""


class EngineError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ModelUnavailableError(EngineError):
    """The requested embedding model's weights cannot be loaded here."""
