"""Commands: export, predict (placeholders until their issue lands)."""

import click

from kerasseg.errors import KerassegError


@click.command(name='export', context_settings={'ignore_unknown_options': True})
@click.argument('args', nargs=-1, type=click.UNPROCESSED)
def export_cmd(args):
    """(not implemented yet)"""
    raise KerassegError('kerasseg export is not implemented yet')


@click.command(name='predict', context_settings={'ignore_unknown_options': True})
@click.argument('args', nargs=-1, type=click.UNPROCESSED)
def predict_cmd(args):
    """(not implemented yet)"""
    raise KerassegError('kerasseg predict is not implemented yet')


COMMANDS = [export_cmd, predict_cmd]
