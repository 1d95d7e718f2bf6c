"""Commands: evaluate, compare, reproduce (placeholders until their issue lands)."""

import click

from kerasseg.errors import KerassegError


@click.command(name='evaluate', context_settings={'ignore_unknown_options': True})
@click.argument('args', nargs=-1, type=click.UNPROCESSED)
def evaluate_cmd(args):
    """(not implemented yet)"""
    raise KerassegError('kerasseg evaluate is not implemented yet')


@click.command(name='compare', context_settings={'ignore_unknown_options': True})
@click.argument('args', nargs=-1, type=click.UNPROCESSED)
def compare_cmd(args):
    """(not implemented yet)"""
    raise KerassegError('kerasseg compare is not implemented yet')


@click.command(name='reproduce', context_settings={'ignore_unknown_options': True})
@click.argument('args', nargs=-1, type=click.UNPROCESSED)
def reproduce_cmd(args):
    """(not implemented yet)"""
    raise KerassegError('kerasseg reproduce is not implemented yet')


COMMANDS = [evaluate_cmd, compare_cmd, reproduce_cmd]
