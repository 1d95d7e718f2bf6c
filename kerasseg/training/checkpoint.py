"""The checkpoint protocol of a run: crash-consistent at every instant.

A checkpoint *unit* is everything a run needs to continue after epoch ``epoch`` exactly as if it
had never stopped: the model's variables (weights, batch-norm statistics, the dropout layers'
RNG states), the optimizer's variables (step count, moments), the epoch number, the callbacks'
state (history rows, best-model scores), the data hash and the seed.

On disk, in the checkpoint folder (``<run>/backup``)::

    unit-000007/            generation 7 (generations only grow)
        state.npz           the arrays ("model/<i>", "opt/<i>")
        meta.json           generation, epoch, final, sha256 of state.npz, the caller's meta

Writing (:func:`write_unit`): both files go into a hidden temporary folder beside the units
(``.unit-000008.tmp-*``), are fsynced, the folder is fsynced and renamed to ``unit-000008``
(atomic: it appears complete or not at all), the parent folder is fsynced, and only then are
older units removed. A crash at any instant leaves the previous unit readable; a torn
temporary folder is never read (its name does not match) and is removed by the next write.
Reading (:func:`read_latest`) takes the newest unit whose ``meta.json`` parses and whose
``state.npz`` matches its recorded checksum; anything else in the folder is skipped with a
warning. Disk full (or any ``OSError``) while writing removes the temporary folder and raises a
one-line :class:`~kerasseg.errors.KerassegError`; the previous unit stays.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kerasseg.errors import KerassegError, warn
from kerasseg.fileio import fault_point, fsync_dir, remove_tree

_UNIT = re.compile(r"^unit-(\d{6,})$")


@dataclass
class CheckpointUnit:
    """One complete checkpoint as read back by :func:`read_latest`."""

    path: Path
    generation: int
    epoch: int                       # completed epochs (the next one to run, 0-based)
    final: bool                      # training is over (last epoch or early stop)
    arrays: dict = field(repr=False, default_factory=dict)
    meta: dict = field(default_factory=dict)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _units(folder: Path) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _UNIT.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_synced(path: Path, write_fn) -> None:
    with open(path, "wb") as fh:
        write_fn(fh)
        fh.flush()
        os.fsync(fh.fileno())


def write_unit(folder, epoch: int, arrays: dict, meta: dict | None = None, *,
               final: bool = False) -> Path:
    """Write a new unit for ``epoch`` completed epochs into ``folder``; returns its path.

    ``arrays`` maps names to NumPy arrays; ``meta`` is any JSON-serialisable dict (kept under
    ``meta.json``'s ``"meta"``). The unit becomes visible atomically; older units are removed
    only after it is complete.
    """
    folder = Path(folder)
    units = _units(folder)
    generation = units[0][0] + 1 if units else 1
    name = f"unit-{generation:06d}"
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=folder))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        _write_synced(tmp / "state.npz", lambda fh: np.savez(fh, **arrays))
        info = {"generation": generation, "epoch": int(epoch), "final": bool(final),
                "state_sha256": _sha256(tmp / "state.npz"), "meta": meta or {}}
        _write_synced(tmp / "meta.json", lambda fh: fh.write(json.dumps(info, indent=1).encode()))
        fault_point("checkpoint.after_write")
        fsync_dir(tmp)
        fault_point("checkpoint.before_rename")
        target = folder / name
        os.rename(tmp, target)
        tmp = None
        fsync_dir(folder)
    except OSError as exc:
        if tmp is not None:
            remove_tree(tmp)
        kept = (f"the previous checkpoint {units[0][1].name} is kept" if units
                else "there is no earlier checkpoint")
        reason = exc.strerror or str(exc)
        raise KerassegError(f"cannot write the checkpoint of epoch {epoch} ({reason}); {kept}; "
                            "free space and run the same command to resume", folder) from None
    except BaseException:
        if tmp is not None:
            remove_tree(tmp)
        raise
    fault_point("checkpoint.after_rename")
    for _, old in units:
        remove_tree(old)
    discard_torn(folder)
    return target


def _is_temporary(p: Path) -> bool:
    return p.name.startswith(".unit-") and ".tmp-" in p.name


def discard_torn(folder) -> None:
    """Remove the temporary folders of unit writes that were killed (never read anyway)."""
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.iterdir():
            if _is_temporary(p):
                remove_tree(p)


def _read_unit(generation: int, path: Path) -> CheckpointUnit:
    info = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    if info.get("generation") != generation:
        raise ValueError("generation does not match the folder name")
    if _sha256(path / "state.npz") != info["state_sha256"]:
        raise ValueError("state.npz does not match its checksum")
    with np.load(path / "state.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return CheckpointUnit(path=path, generation=generation, epoch=int(info["epoch"]),
                          final=bool(info.get("final", False)), arrays=arrays,
                          meta=dict(info.get("meta") or {}))


def read_latest(folder) -> CheckpointUnit | None:
    """The newest complete, intact unit in ``folder``, or ``None`` when there is none.

    Units that cannot be read (damaged after they were written) and files that are not units
    (e.g. a torn checkpoint of an older kerasseg) are skipped with a warning."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    for generation, path in _units(folder):
        try:
            return _read_unit(generation, path)
        except (OSError, ValueError, KeyError, TypeError, EOFError) as exc:
            warn(f"skipping a torn or damaged checkpoint ({exc})", path)
    others = [p.name for p in folder.iterdir() if not _UNIT.match(p.name) and not _is_temporary(p)]
    if others:
        warn(f"ignoring files that are not checkpoint units (torn or foreign): {', '.join(sorted(others))}",
             folder)
    return None


def remove_checkpoints(folder) -> None:
    """Remove the checkpoint folder (once the run is finished and recorded)."""
    remove_tree(folder)


# ------------------------------------------------------------------ model state <-> arrays
def _optimizer_variables(model) -> list:
    opt = getattr(model, "optimizer", None)
    return list(opt.variables) if opt is not None else []


def model_arrays(model) -> dict:
    """All state of a compiled Keras model as arrays: its variables (``model.variables``: weights,
    non-trainable statistics and RNG seed states) and its optimizer's variables."""
    arrays = {f"model/{i:05d}": np.asarray(v.numpy()) for i, v in enumerate(model.variables)}
    arrays.update({f"opt/{i:05d}": np.asarray(v.numpy())
                   for i, v in enumerate(_optimizer_variables(model))})
    return arrays


def restore_model_arrays(model, arrays: dict, path=None) -> None:
    """Assign :func:`model_arrays` output back (build the optimizer first). A one-line error
    naming ``path`` when the checkpoint does not match the model (other config or version)."""
    opt = getattr(model, "optimizer", None)
    if opt is not None and not opt.built:
        opt.build(model.trainable_variables)
    for prefix, variables in (("model", list(model.variables)), ("opt", _optimizer_variables(model))):
        names = sorted(k for k in arrays if k.startswith(prefix + "/"))
        if len(names) != len(variables):
            raise KerassegError(f"the checkpoint holds {len(names)} {prefix} variables, this model has "
                                f"{len(variables)}: it belongs to another model; delete it or use "
                                "another --out", path)
        for name, var in zip(names, variables):
            value = arrays[name]
            if tuple(value.shape) != tuple(var.shape):
                raise KerassegError(f"checkpoint variable {name} has shape {value.shape}, the model "
                                    f"expects {tuple(var.shape)}: it belongs to another model", path)
            var.assign(value)
