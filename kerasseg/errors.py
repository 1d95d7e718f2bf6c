"""User-facing errors.

Every problem caused by the user's input (a corrupt file, a bad config key, a
wrong-shaped request) is raised as :class:`KerassegError` with a one-line
message that names the file or value and the problem. The CLI prints such
errors as ``Error: <message>`` without a traceback and exits with status 1.
"""

from __future__ import annotations

import warnings


class KerassegError(Exception):
    """An error in the user's input, reported as one clear line."""

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
