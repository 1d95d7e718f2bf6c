"""Commands: fit (placeholders until their issue lands)."""

import click

from kerasseg.errors import KerassegError


@click.command(name='fit', context_settings={'ignore_unknown_options': True})
@click.argument('args', nargs=-1, type=click.UNPROCESSED)
def fit_cmd(args):
    """(not implemented yet)"""
    raise KerassegError('kerasseg fit is not implemented yet')


COMMANDS = [fit_cmd]
