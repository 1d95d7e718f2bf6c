"""Commands: ``kerasseg fit`` (parses arguments, calls :func:`kerasseg.training.fit`)."""

from __future__ import annotations

import click


@click.command(name="fit", short_help="Train a config (table row); --folds K: cross-validation.")
@click.argument("config", default="crunet-l067", required=False)
@click.option("--data", default=None, metavar="phantom|FILE.npz",
              help="Prepared dataset (.npz from `kerasseg data prepare`); default: the built-in phantom.")
@click.option("--out", "out_dir", default=None, metavar="RUN_DIR",
              help="Run directory (default runs/<config name>). Re-run the same command to resume.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override train.epochs.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Override train.seed.")
@click.option("--devices", type=click.IntRange(min=1), default=None,
              help="Replicas: N GPUs, or N logical CPU devices without GPUs (default: all GPUs / 1 CPU).")
@click.option("--dataset", type=click.Choice(["inbreast", "ddsm", "phantom"]), default=None,
              help="Which `datasets:` section of the config applies (default: from the data's source).")
@click.option("--folds", type=click.IntRange(min=2), default=None, metavar="K",
              help="Grouped K-fold cross-validation over the train+val ROIs: OUT/fold-<k>/ runs, "
                   "OUT/cv.json (out-of-fold Dice, baselines, post-processing chosen on CV).")
def fit_cmd(config, data, out_dir, epochs, seed, devices, dataset, folds):
    """Train CONFIG (a name in configs/, e.g. crunet-l067, or a YAML path).

    Writes model.keras (best validation Dice), history.csv, run.json, tb/ to the run
    directory. TF_CONFIG in the environment selects multi-worker training. With --folds K,
    trains K models (each validated on its held-out fold; the test split is never used) whose
    ensemble `kerasseg evaluate/predict/export OUT` use.
    """
    if folds is not None:
        from kerasseg.training.folds import fit_folds

        click.echo(fit_folds(config, data=data, out_dir=out_dir, folds=folds, epochs=epochs,
                             seed=seed, devices=devices, dataset=dataset).summary())
        return
    from kerasseg.training import fit

    # Ctrl-C / SIGTERM: fit saves a resumable state and raises Interrupted (exit 130 / 143)
    click.echo(fit(config, data=data, out_dir=out_dir, epochs=epochs, seed=seed,
                   devices=devices, dataset=dataset).summary())


COMMANDS = [fit_cmd]
