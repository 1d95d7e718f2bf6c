"""Commands: data (placeholders until their issue lands)."""

import click

from kerasseg.errors import KerassegError


@click.command(name='data', context_settings={'ignore_unknown_options': True})
@click.argument('args', nargs=-1, type=click.UNPROCESSED)
def data_cmd(args):
    """(not implemented yet)"""
    raise KerassegError('kerasseg data is not implemented yet')


COMMANDS = [data_cmd]
