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

    def __init__(self, message: str, path=None, argument: str | None = None):
        if path is not None:
            message = f"{path}: {message}"
        super().__init__(message)
        #: the Python argument the message starts with (:func:`argument_error`); the CLI names its flag
        self.argument = argument


def argument_error(argument: str, message: str, path=None) -> KerassegError:
    """A :class:`KerassegError` about the function argument ``argument``: ``"<argument> <message>"``
    for Python callers; the CLI shows it as ``"--<argument> <message>"`` (its flag).

    >>> str(argument_error("epochs", "must be a positive integer, got 0"))
    'epochs must be a positive integer, got 0'
    """
    return KerassegError(f"{argument} {message}", path, argument=argument)


def as_flag(exc: KerassegError) -> str:
    """The message of ``exc`` with its argument written as the CLI flag (``epochs`` -> ``--epochs``).

    >>> as_flag(argument_error("box_margin", "must be in [0, 0.5], got 2"))
    '--box-margin must be in [0, 0.5], got 2'
    """
    text, arg = str(exc), getattr(exc, "argument", None)
    if not arg:
        return text
    flag = "--" + arg.replace("_", "-")
    head, sep, tail = text.partition(f"{arg} ")
    return f"{head}{flag} {tail}" if sep and (not head or head.endswith(": ")) else text


class KerassegWarning(UserWarning):
    """A recoverable problem in the user's input (clipped contour, skipped file...)."""


def warn(message: str, path=None) -> None:
    """Emit a :class:`KerassegWarning`, prefixed with the path when given."""
    if path is not None:
        message = f"{path}: {message}"
    warnings.warn(message, KerassegWarning, stacklevel=2)


class Interrupted(Exception):
    """Long work stopped by SIGINT (Ctrl-C) or SIGTERM after saving a resumable state.

    Not a :class:`KerassegError`: the CLI prints the message and exits with ``128 + signum``
    (130 for Ctrl-C, 143 for SIGTERM), the shell's convention, so ``kerasseg fit && kerasseg
    export`` never exports a half-trained model.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _SignalHandlers:
    def __init__(self):
        self.saved = {}
        self.pending = None

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return self

        def handler(signum, _frame):
            if self.pending is None:
                self.pending = signum   # raised by check() at the next safe point
                return
            raise KeyboardInterrupt(signum)  # a second signal: at once

        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, handler)
        return self

    def check(self) -> None:
        """Raise ``KeyboardInterrupt(signum)`` if a signal arrived (the work's safe point)."""
        if self.pending is not None:
            raise KeyboardInterrupt(self.pending)

    def __exit__(self, *exc):
        import signal

        for sig, old in self.saved.items():
            signal.signal(sig, old)
        self.saved.clear()
        return False


def stop_on_signals():
    """A context manager under which the first SIGINT or SIGTERM is only recorded, and raised as
    ``KeyboardInterrupt(signum)`` by the manager's ``check()`` at the work's next safe point
    (training: after a batch, never inside a checkpoint write), so long work can save a resumable
    state and raise :class:`Interrupted`; a second signal raises at once. In the main thread only
    (elsewhere it does nothing). :func:`signal_number` reads the number back."""
    return _SignalHandlers()


def signal_number(exc: BaseException) -> int:
    """The signal of a ``KeyboardInterrupt`` raised under :func:`stop_on_signals` (SIGINT otherwise)."""
    import signal

    args = getattr(exc, "args", ())
    return int(args[0]) if args and isinstance(args[0], int) else int(signal.SIGINT)
