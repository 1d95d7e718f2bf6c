"""Commands: evaluate (a run -> report folder), compare (two reports), reproduce (a paper's table)."""

import click


@click.command(name="evaluate", short_help="Report Dice, HD95, figures of a model or CV ensemble.")
@click.argument("source", type=click.Path(path_type=str))
@click.option("--data", "data", default=None,
              help="'phantom' or a dataset .npz (default: the data the run was trained on, else the phantom).")
@click.option("--split", "split", default="test", show_default=True, help="Split to evaluate: train, val or test.")
@click.option("--out", "out", default=None, type=click.Path(path_type=str),
              help="Report folder (default: RUN_DIR/eval-<split>).")
@click.option("--batch-size", "batch_size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--tta", type=click.Choice(["none", "flips", "dihedral"]), default="none", show_default=True,
              help="Test-time augmentation: average over 4 flips or the 8 flips/rotations of each ROI.")
@click.option("--no-figures", "no_figures", is_flag=True, help="Skip the PNG figures.")
@click.option("--box-margin", "box_margin", default=None, type=float, metavar="M",
              help="Score at the tight box grown by M (fraction of its height/width) on every side, cut "
                   "from the data's context windows; with the prior and Otsu at the same boxes. "
                   "0 = the papers' tight box (default report folder: eval-<split>-box<M>).")
@click.option("--box-shift", "box_shift", default=None, type=float, metavar="S",
              help="Also move the box centre by S times the box size, in a direction fixed per ROI "
                   "(by --box-seed).")
@click.option("--box-seed", "box_seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Seed of the per-ROI shift directions.")
@click.option("--robustness", is_flag=True,
              help="Also Dice of the model and the prior vs box margin and vs shift: "
                   "metrics.json['robustness'] and robustness.png.")
def evaluate_cmd(source, data, split, out, batch_size, tta, no_figures, box_margin, box_shift, box_seed,
                 robustness):
    """Evaluate RUN_DIR, a cross-validation folder (the ensemble of its folds) or MODEL.keras:
    Dice, IoU, HD95, trimap accuracy, figures, predictions (+ uncertainty for ensembles/TTA);
    at other boxes than the tight one with --box-margin / --box-shift / --robustness."""
    from kerasseg.evaluation.report import evaluate_run

    evaluate_run(source, data=data, split=split, out_dir=out, tta=tta, batch_size=batch_size,
                 figures=not no_figures, verbose=True, box_margin=box_margin, box_shift=box_shift,
                 box_seed=box_seed, robustness=robustness)


@click.command(name="compare", short_help="Paired tests of two evaluation reports.")
@click.argument("report_a", type=click.Path(path_type=str))
@click.argument("report_b", type=click.Path(path_type=str))
@click.option("--out", "out", default=None, type=click.Path(path_type=str),
              help="JSON file for the result (default: REPORT_A/compare-<name of REPORT_B>.json).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap.")
@click.option("--n-boot", "n_boot", default=10000, show_default=True, type=click.IntRange(min=100))
@click.option("--no-figures", "no_figures", is_flag=True, help="Skip the contour figure (OUT with .png).")
def compare_cmd(report_a, report_b, out, seed, n_boot, no_figures):
    """Paired tests of REPORT_A vs REPORT_B: McNemar exact (pixels), Wilcoxon and bootstrap (per-image Dice)."""
    from kerasseg.evaluation.compare import compare_reports

    compare_reports(report_a, report_b, out=out, seed=seed, n_boot=n_boot, figures=not no_figures,
                    verbose=True)


@click.command(name="reproduce", short_help="Every row of a paper's table, with the baselines.")
@click.argument("table", type=click.Choice(["crunet-table1", "zhu-table2"]))
@click.option("--data", "data", default="phantom", show_default=True, help="'phantom' or a dataset .npz.")
@click.option("--seeds", default=5, show_default=True, type=click.IntRange(min=1), help="Seeds per row.")
@click.option("--epochs", default=None, type=click.IntRange(min=1), help="Override the configs' epochs.")
@click.option("--quick", is_flag=True, help="Smoke run: a few ROIs, 1 epoch unless --epochs is given.")
@click.option("--out", "out", default=None, type=click.Path(path_type=str),
              help="Output folder (default: reproduce-<TABLE>); rows already done there are skipped.")
@click.option("--folds", default=None, type=click.IntRange(min=2), metavar="K",
              help="K-fold grouped cross-validation per row (out-of-fold Dice ± std over folds, fold "
                   "ensemble on test) instead of seeds.")
def reproduce_cmd(table, data, seeds, epochs, quick, out, folds):
    """Train and evaluate every row of TABLE for each seed (or as K folds); write table.md / table.csv
    with the model-free baselines and paired tests against the prior."""
    from kerasseg.evaluation.reproduce import reproduce_table

    reproduce_table(table, data, seeds=seeds, epochs=epochs, quick=quick, out_dir=out, verbose=True,
                    folds=folds)


COMMANDS = [evaluate_cmd, compare_cmd, reproduce_cmd]
