"""``kerasseg data``: prepare a dataset file from a source, re-split one by groups, describe one."""

from __future__ import annotations

import warnings

import click

from kerasseg.errors import KerassegError, KerassegWarning

SOURCES = ("inbreast", "ddsm-bcrp", "cbis-ddsm", "folder", "phantom")
SPLITS = ("auto", "protocol", "official", "patient", "random")


@click.group(name="data", short_help="Prepare, re-split and describe ROI datasets.")
def data():
    """Prepare ROI datasets (.npz) from INbreast, DDSM-BCRP, CBIS-DDSM, folders or the phantom."""


@data.command(name="prepare")
@click.argument("source", type=click.Choice(SOURCES, case_sensitive=False))
@click.argument("src", type=str)
@click.option("--out", "-o", required=True, type=str, help="Output FILE.npz.")
@click.option("--size", default=40, show_default=True, type=click.IntRange(min=2), help="ROI side in pixels.")
@click.option("--margin", default=0.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Enlarge the mass bounding box by this fraction of its width/height on each side.")
@click.option("--split", "split", default="auto", show_default=True, type=click.Choice(SPLITS),
              help="auto = the source's default (inbreast: protocol 58/58, ddsm-bcrp/cbis-ddsm: official, "
                   "folder: random).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the splits.")
@click.option("--test-fraction", default=0.5, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Share of ROIs in test for --split patient/random.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Share of the train ROIs moved to val (never taken from test).")
@click.option("--mirror/--no-mirror", default=False, show_default=True,
              help="Flip ROIs of right breasts left-right (common orientation).")
@click.option("--ready-rois", is_flag=True, help="folder: the images are already ROIs (only resized).")
@click.option("--train-list", type=click.Path(exists=True, dir_okay=False),
              help="ddsm-bcrp: text file of the official training cases.")
@click.option("--test-list", type=click.Path(exists=True, dir_okay=False),
              help="ddsm-bcrp: text file of the official test cases.")
@click.option("--n-train", default=58, show_default=True, type=click.IntRange(min=0), help="phantom: train ROIs.")
@click.option("--n-val", default=12, show_default=True, type=click.IntRange(min=0), help="phantom: val ROIs.")
@click.option("--n-test", default=58, show_default=True, type=click.IntRange(min=0), help="phantom: test ROIs.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def prepare_cmd(source, src, out, size, margin, split, seed, test_fraction, val_fraction, mirror, ready_rois,
                train_list, test_list, n_train, n_val, n_test, progress):
    """Read SRC as SOURCE and write the ROI dataset to --out FILE.npz.

    \b
    kerasseg data prepare inbreast /data/INbreast --out inbreast.npz
    kerasseg data prepare folder ./mydata --out my.npz --size 64 --margin 0.1
    kerasseg data prepare phantom - --out phantom.npz
    """
    from kerasseg.data.dataset import save_npz
    from kerasseg.data.readers import check_output, prepare

    check_output(out)  # fail before the (long) reading, not after
    source = source.lower()
    with warnings.catch_warnings():
        # readers report recoverable problems in the summary printed below
        warnings.simplefilter("ignore", KerassegWarning)
        ds, summary = prepare(source, src, size=size, margin=margin, split=split, seed=seed, mirror=mirror,
                              ready_rois=ready_rois, test_fraction=test_fraction, val_fraction=val_fraction,
                              train_list=train_list, test_list=test_list, progress=progress,
                              n_train=n_train, n_val=n_val, n_test=n_test)
    path = save_npz(ds, out)
    for line in summary.lines():
        click.echo(line)
    counts = ds.counts()
    click.echo(f"wrote {path}: {len(ds)} ROI(s) of {ds.size}x{ds.size} "
               f"(train {counts['train']}, val {counts['val']}, test {counts['test']})")


@data.command(name="split")
@click.argument("file", type=str)
@click.option("--out", "-o", required=True, type=str, help="Output FILE.npz (the same ROIs, new splits).")
@click.option("--test-fraction", default=0.2, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Share of ROIs drawn for test (whole groups) when FILE has no test ROIs.")
@click.option("--val-fraction", default=0.1, show_default=True, type=click.FloatRange(0.0, 1.0, max_open=True),
              help="Share of the train ROIs moved to val (whole groups).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0), help="Seed of the draw.")
def split_cmd(file, out, test_fraction, val_fraction, seed):
    """Re-split FILE.npz into train / val / test by whole groups (patients, contours).

    Test ROIs already in FILE stay test; without any, --test-fraction of the ROIs (whole groups)
    are drawn for test. Files without a group array split ROI by ROI.

    \b
    kerasseg data split lesion-dev.npz --out lesion-split.npz --test-fraction 0.2 --val-fraction 0.15
    """
    from kerasseg.data.dataset import save_npz
    from kerasseg.data.info import summarize
    from kerasseg.data.readers import check_output
    from kerasseg.data.sources import load_data
    from kerasseg.data.splits import resplit

    check_output(out)
    ds = load_data(file)
    kept = ds.counts()["test"]
    new = ds.with_split(resplit(ds.split, ds.groups(), test_fraction=test_fraction,
                                val_fraction=val_fraction, seed=seed))
    path = save_npz(new, out)
    if kept:
        click.echo(f"kept the {kept} test ROI(s) of {file} as test")
    click.echo(summarize(new))
    click.echo(f"wrote {path}")


@data.command(name="info")
@click.argument("file", type=str)
@click.option("--grid", type=click.Path(dir_okay=False), help="Write a thumbnail grid PNG here.")
@click.option("--n", "n_thumbs", default=32, show_default=True, type=click.IntRange(min=1),
              help="Thumbnails in the grid.")
def info_cmd(file, grid, n_thumbs):
    """Print counts per split and mask-area statistics of FILE.npz (or 'phantom')."""
    from kerasseg.data.sources import load_data
    from kerasseg.data.info import summarize, thumbnail_grid

    ds = load_data(file)
    click.echo(summarize(ds))
    if grid:
        path = thumbnail_grid(ds, grid, n=n_thumbs)
        click.echo(f"wrote {path}")


def _wrap(cmd):
    """Turn KerassegError into click's one-line 'Error: ...' also when a subcommand is invoked directly."""
    callback = cmd.callback

    def run(*args, **kwargs):
        try:
            return callback(*args, **kwargs)
        except KerassegError as exc:
            raise click.ClickException(str(exc)) from None

    cmd.callback = run
    return cmd


for _cmd in (prepare_cmd, split_cmd, info_cmd):
    _wrap(_cmd)

COMMANDS = [data]
