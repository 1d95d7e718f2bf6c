"""User-facing errors.

Every problem caused by the user's input (a corrupt file, a bad config key, a
wrong-shaped request) is raised as :class:`KerassegError` with a one-line
message that names the file or value and the problem. The CLI prints such
errors as ``Error: <message>`` without a traceback and exits with status 1.

``KerassegError`` is a ``ValueError``: code that guards a call with ``except ValueError`` (the
Python convention for a bad value) also catches it, e.g. Keras and NumPy callers.
"""

from __future__ import annotations

import warnings


class KerassegError(ValueError):
    """An error in the user's input, reported as one clear line (a ``ValueError``).

    Args:
        message: what is wrong, one line.
        path: the file or value concerned; prefixed as ``"<path>: <message>"``.

    Example:

    >>> from kerasseg.errors import KerassegError
    >>> str(KerassegError("not valid YAML at line 3", path="configs/x.yaml"))
    'configs/x.yaml: not valid YAML at line 3'
    >>> isinstance(KerassegError("bad"), ValueError)
    True
    """

    def __init__(self, message: str, path=None):
        if path is not None:
            message = f"{path}: {message}"
        super().__init__(message)


class KerassegWarning(UserWarning):
    """A recoverable problem in the user's input (clipped contour, skipped file...)."""


def warn(message: str, path=None) -> None:
    """Emit a :class:`KerassegWarning`, prefixed with the path when given."""
    if path is not None:
        message = f"{path}: {message}"
    warnings.warn(message, KerassegWarning, stacklevel=2)
