"""Atomic file writes: every file kerasseg writes goes to a temporary name beside its target
and is renamed into place, so a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from kerasseg.errors import KerassegError


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path, suffix: str = ".tmp"):
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    On any exception the temporary file is removed. ``OSError`` (folder missing, not writable,
    disk full) becomes a one-line :class:`KerassegError` naming ``path``.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise KerassegError("output folder does not exist", parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=parent)
    except OSError as exc:
        raise KerassegError(f"cannot write here ({exc.strerror})", path) from None
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise KerassegError(f"cannot write ({exc.strerror or exc})", path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path, write_fn, mode: str = "wb") -> Path:
    """Call ``write_fn(fh)`` on a file opened with ``mode`` and move the result onto ``path``."""
    text = "b" not in mode
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({"encoding": "utf-8", "newline": ""} if text else {})) as fh:
            write_fn(fh)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def _blocking_file(path: Path) -> Path | None:
    """The first existing non-folder on the way to ``path`` (``path`` itself included), if any."""
    for p in [*reversed(path.parents), path]:
        if p.exists() and not p.is_dir():
            return p
    return None


def output_dir(path, what: str = "output folder", create: bool = True) -> Path:
    """Create (if needed) and return the folder ``path`` that a command writes into.

    The one output-path check of every command: a one-line :class:`KerassegError` naming the path
    when it is a file, lies under a file, or cannot be created or written (read-only, no space).
    ``create=False`` only checks (before long work), creating nothing.
    """
    path = Path(path)
    blocker = _blocking_file(path)
    if blocker is not None:
        where = "is a file" if blocker == path else f"lies under the file {blocker}"
        raise KerassegError(f"{what} {where}, not a folder", path)
    if not create:
        existing = next((p for p in [path, *path.parents] if p.exists()), Path("."))
        if not os.access(existing, os.W_OK | os.X_OK):
            raise KerassegError(f"{what} is not writable ({existing} is read-only)", path)
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KerassegError(f"cannot create the {what} ({exc.strerror or exc})", path) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise KerassegError(f"{what} is not writable", path)
    return path


def output_file(path, suffix: str | None = None) -> Path:
    """Check that the file ``path`` (``suffix`` appended when missing) can be written, before the
    work that produces it: a one-line :class:`KerassegError` if ``path`` is a folder, its folder is
    missing, lies under a file or is not writable."""
    path = Path(path)
    if path.is_dir():
        raise KerassegError("output path is a folder; give a file name", path)
    if suffix and path.suffix != suffix:
        path = path.with_name(path.name + suffix)
        if path.is_dir():
            raise KerassegError("output path is a folder; give a file name", path)
    parent = path.parent if str(path.parent) else Path(".")
    blocker = _blocking_file(parent)
    if blocker is not None:
        raise KerassegError(f"output folder lies under the file {blocker}", path)
    if not parent.is_dir():
        raise KerassegError("output folder does not exist", parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise KerassegError("output folder is not writable", parent)
    return path
