"""Atomic file writes: every file kerasseg writes goes to a temporary name beside its target
and is renamed into place, so a reader (or a crash) never sees a half-written file."""

from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

from kerasseg.errors import KerassegError


def _umask_mode(base: int = 0o666) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


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
    check_regular(path)
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


def check_regular(path) -> None:
    """Outputs go to regular files or new paths only: a one-line :class:`KerassegError` when
    ``path`` exists and is a device, pipe or socket (renaming onto it would replace ``/dev/null``)."""
    p = Path(path)
    if p.exists() and not p.is_file() and not p.is_dir():
        raise KerassegError("output path exists and is not a regular file (a device, pipe or socket); "
                            "give a new file name", p)


def save_model(model, path) -> Path:
    """``model.save`` to ``path`` (a ``.keras`` file) atomically: a new random ``.keras`` name beside it
    (created with O_EXCL, never a fixed name that a symlink could redirect), then renamed."""
    path = Path(path)
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
    return path


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


def json_safe(obj):
    """``obj`` with every NaN/inf float replaced by ``None`` (valid JSON: ``null``)."""
    import numpy as np

    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)) and not np.isfinite(obj):
        return None
    return obj


def write_json(path, obj) -> Path:
    """JSON (indented) written atomically; non-finite numbers become ``null`` (strict JSON)."""
    import json

    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, allow_nan=False, default=str)
    return atomic_write(path, lambda fh: fh.write(text + "\n"), "w")


def write_csv(path, header, rows) -> Path:
    """CSV written atomically."""
    import csv

    def w(fh):
        wr = csv.writer(fh)
        wr.writerow(header)
        wr.writerows(rows)
    return atomic_write(path, w, "w")


def write_npz(path, **arrays) -> Path:
    """Compressed .npz written atomically."""
    import numpy as np

    return atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays), "wb")


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
    check_regular(path)
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
    check_regular(path)
    return path


@contextmanager
def folder_lock(folder, what: str = "folder"):
    """Hold an advisory lock on ``folder`` (it need not exist yet) for the block.

    The lock is ``.<name>.lock`` beside the folder, held with ``flock`` (released by the kernel when
    the process ends, so a killed command leaves no stale lock) and holding the owner's pid. A
    second kerasseg command on the same folder gets a one-line :class:`KerassegError` "in use by
    pid N" at once instead of both writing. The lock file is removed on release; a lock file
    swapped or removed while waiting is detected (inode check) and taken again.
    """
    import fcntl

    folder = Path(folder)
    parent = folder.parent if str(folder.parent) else Path(".")
    lock = parent / f".{folder.name}.lock"
    if not parent.is_dir():
        raise KerassegError("output folder does not exist", parent)
    check_regular(lock)
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise KerassegError(f"cannot lock the {what} ({exc.strerror or exc})", folder) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                owner = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            finally:
                os.close(fd)
            raise KerassegError(f"{what} is in use by pid {owner} (another kerasseg command); wait for "
                                "it to finish or use another output", folder) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except OSError:
            same = False
        if same:
            break
        os.close(fd)  # the file was replaced or removed after we opened it: take the new one
    else:
        raise KerassegError(f"cannot lock the {what} (its lock file keeps changing)", folder)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield folder
    finally:
        try:
            os.unlink(lock)
        except OSError:
            pass
        os.close(fd)


def fsync_dir(path) -> None:
    """Make a rename or creation inside the folder ``path`` durable (no-op where unsupported)."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_tree(path) -> None:
    """Remove the folder ``path`` and everything in it, if it exists (errors ignored)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def remove_leftovers(folder, pattern: str, min_age_s: float = 600.0) -> None:
    """Delete the hidden folders a killed command left in ``folder``: entries whose name matches the
    regular expression ``pattern`` and that were untouched for ``min_age_s`` seconds (a command
    running concurrently into the same place keeps its own). Errors are ignored."""
    import shutil
    import time

    rx, now = re.compile(pattern), time.time()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return
    for p in entries:
        try:
            if p.is_dir() and rx.match(p.name) and now - p.stat().st_mtime > min_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


@contextmanager
def staged_dir(target, *, replace: bool = False, what: str = "output folder"):
    """Build a multi-file output in a hidden temporary folder and rename it onto ``target``.

    Yields the temporary folder (a sibling of ``target`` named ``.<name>.staged-<random>``, so it
    is on the same file system and the final rename is atomic). When the block succeeds the
    folder's files and the folder itself are fsynced and it is renamed onto ``target``; when
    the block raises (or the process is interrupted) the temporary folder is removed and
    ``target`` is untouched, so a failed command never leaves a half-built output behind.

    ``target`` must not exist unless ``replace=True``: then an existing ``target`` folder is
    replaced (moved aside, the new folder renamed in, the old one removed; a crash in between
    leaves either the old or the new folder at ``target``, plus a hidden ``.<name>.old-*``).
    ``OSError`` (no space, read-only) becomes a one-line :class:`KerassegError` naming
    ``target``. Typical use::

        with staged_dir(report_dir) as tmp:
            write_metrics(tmp / "metrics.json"); write_plots(tmp)
    """
    target = Path(target)
    parent = target.parent if str(target.parent) else Path(".")
    output_dir(parent, what)
    if target.exists() and not replace:
        raise KerassegError(f"{what} already exists", target)
    remove_leftovers(parent, r"^\." + re.escape(target.name) + r"\.(staged|old)-")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.staged-", dir=parent))
    except OSError as exc:
        raise KerassegError(f"cannot create the {what} ({exc.strerror or exc})", target) from None
    try:
        os.chmod(tmp, _umask_mode(0o777))  # mkdtemp creates 0700
        yield tmp
        _fsync_files(tmp)
        if target.exists():
            if not replace:
                raise KerassegError(f"{what} appeared while it was being built", target)
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            fsync_dir(parent)
            remove_tree(old)
        else:
            os.rename(tmp, target)
            fsync_dir(parent)
    except OSError as exc:
        remove_tree(tmp)
        raise KerassegError(f"cannot write the {what} ({exc.strerror or exc})", target) from None
    except BaseException:
        remove_tree(tmp)
        raise


def _fsync_files(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(folder)


@contextmanager
def staged_update(target, *, commit: str, owned=(), what: str = "output folder"):
    """Replace a set of files inside an existing folder ``target`` as one unit.

    Yields a hidden temporary folder inside ``target``; the block writes the complete new set
    there. Nothing in ``target`` changes until the block succeeds (on failure the temporary folder
    is removed and the old files are untouched). Then the old ``commit`` file (the set's record,
    e.g. ``metrics.json``) is removed first, the other new files are renamed in, files named in
    ``owned`` that the new set does not contain are removed (no stale figure of an older run), and
    the new ``commit`` file is renamed in last. At every instant ``target`` therefore holds either
    the complete old set, or the complete new set, or a set without its ``commit`` file, which
    readers refuse; files of ``target`` outside ``owned`` (a compare result beside a report) are
    kept. ``OSError`` becomes a one-line :class:`KerassegError` naming ``target``.
    """
    target = output_dir(target, what)
    remove_leftovers(target, r"^\.staged-")
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".staged-", dir=target))
    except OSError as exc:
        raise KerassegError(f"cannot write into the {what} ({exc.strerror or exc})", target) from None
    try:
        yield tmp
        new = sorted(f.name for f in tmp.iterdir())
        if commit not in new:
            raise KerassegError(f"internal: the new set has no {commit}", target)
        _fsync_files(tmp)
        (target / commit).unlink(missing_ok=True)
        fsync_dir(target)
        fault_point("staged_update.uncommitted")
        for name in new:
            if name != commit:
                os.replace(tmp / name, target / name)
        for name in owned:
            if name not in new and name != commit:
                (target / name).unlink(missing_ok=True)
        os.replace(tmp / commit, target / commit)
        fsync_dir(target)
    except OSError as exc:
        raise KerassegError(f"cannot write into the {what} ({exc.strerror or exc})", target) from None
    finally:
        remove_tree(tmp)


#: environment variable naming the fault point at which :func:`fault_point` kills the process
FAULT_ENV = "KERASSEG_FAULT"
_fault_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Test-only crash injection: SIGKILL this process when ``KERASSEG_FAULT`` names ``name``.

    ``KERASSEG_FAULT=<name>`` kills at the first time the point is reached,
    ``KERASSEG_FAULT=<name>:<n>`` at the n-th time. Unset (always, outside tests) it does nothing.
    Points: ``checkpoint.after_write`` (unit written to its temp folder), ``checkpoint.before_rename``
    (fsynced, not yet visible), ``checkpoint.after_rename`` (new unit visible, old one not yet
    removed), ``fit.after_last_epoch`` (training done, run.json not yet final),
    ``export.before_swap`` (export staged, not yet renamed into place), ``export.after_swap`` (new
    version in place, the staging folder with the old version not yet removed),
    ``staged_update.uncommitted`` (an update's old record file removed, no new file moved in yet).
    """
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] >= (int(count) if count.isdigit() else 1):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
