"""Entry point of the ``kerasseg`` command.

The commands live in one module per area (``data_cmds``, ``train_cmds``,
``eval_cmds``, ``export_cmds``); this module only assembles them and turns
:class:`kerasseg.KerassegError` into a one-line ``Error: ...`` message.
"""

from __future__ import annotations

import os
import sys

# TensorFlow's C++ log: level 3 keeps its start-up and kernel-selection chatter off the
# terminal (e.g. "oneDNN supports DT_INT32 only on platforms with AVX-512", an ERROR-level line
# printed once per run by a harmless fallback). Python exceptions are unaffected.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import warnings  # noqa: E402

import click  # noqa: E402

from kerasseg import __version__  # noqa: E402
from kerasseg.errors import Interrupted, KerassegError, KerassegWarning, as_flag  # noqa: E402

_python_format = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None):
    """kerasseg's own warnings as one ``Warning: ...`` line (no source file, line number or code);
    other libraries' warnings as Python prints them."""
    if issubclass(category, KerassegWarning):
        return f"Warning: {message}\n"
    return _python_format(message, category, filename, lineno, line)


warnings.formatwarning = _format_warning


def _quiet_tensorflow_start():
    """Import TensorFlow and probe its devices with C-level stderr silenced.

    TensorFlow's C++ runtime prints lines such as "Could not find cuda drivers" and
    "failed call to cuInit" before its log level applies; on a machine without a GPU they
    look like errors but are not. Only this start-up is silenced: Python exceptions still
    propagate, and everything printed afterwards reaches stderr as usual.
    """
    if "tensorflow" in sys.modules or os.environ.get("KERASSEG_VERBOSE_TF"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")  # the CUDA probe; does not fix logical devices
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# commands that never import TensorFlow: they must not pay its start-up (seconds) either
TENSORFLOW_FREE_COMMANDS = frozenset({"data"})


def _starts_tensorflow(words) -> bool:
    """Whether the command line ``words`` (after ``kerasseg``) imports TensorFlow.

    Every command does, except in the ``data`` group: there only ``prepare`` and any use of the
    built-in phantom do (they resize ROIs with the TensorFlow op the model shares,
    kerasseg.data.transforms); ``data info FILE.npz`` and help never do.
    """
    if not words:
        return False
    if words[0] not in TENSORFLOW_FREE_COMMANDS:
        return True
    if {"-h", "--help"} & set(words):
        return False
    return len(words) > 1 and (words[1] == "prepare" or "phantom" in words[2:])


class KerassegGroup(click.Group):
    """A click group that reports :class:`KerassegError` as one clear line."""

    def invoke(self, ctx):
        words = [*ctx.protected_args, *ctx.args]
        if _starts_tensorflow(words):
            _quiet_tensorflow_start()
        try:
            return super().invoke(ctx)
        except KerassegError as exc:
            raise click.ClickException(as_flag(exc)) from None
        except Interrupted as exc:  # resumable state saved: exit 130 (SIGINT) / 143 (SIGTERM)
            click.echo(f"Interrupted: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=KerassegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kerasseg")
def cli():
    """Breast-mass segmentation in mammograms: CRU-Net and adversarial FCN-CRF.

    Start with `kerasseg fit` (trains on the built-in phantom when no data is
    given), then `kerasseg evaluate`, `kerasseg export` for TF Serving.
    """


def _register():
    from kerasseg.cli import data_cmds, eval_cmds, export_cmds, train_cmds

    for module in (data_cmds, train_cmds, eval_cmds, export_cmds):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv=None):
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="kerasseg", standalone_mode=True)
    except KerassegError as exc:  # raised outside a command's invoke (e.g. callbacks)
        click.echo(f"Error: {as_flag(exc)}", err=True)
        sys.exit(1)   # every user error exits 1 (README); 2 is click's usage error
