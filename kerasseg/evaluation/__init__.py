"""kerasseg.evaluation: metrics, paired statistics, figures, reports and paper tables.

- :mod:`~kerasseg.evaluation.metrics`   Dice / IoU / sensitivity / precision, pooled Dice, HD95, trimap accuracy
- :mod:`~kerasseg.evaluation.stats`     McNemar exact, Wilcoxon signed-rank, paired bootstrap CI
- :mod:`~kerasseg.evaluation.plots`     Dice histogram + ECDF, contour grids, trimap curve, robustness (PNG)
- :mod:`~kerasseg.evaluation.report`    ``evaluate_run`` / ``evaluate_arrays`` (report folders; CV ensembles, TTA;
                                        scoring at any box: ``box_margin`` / ``box_shift``, ``robustness_table``)
- :mod:`~kerasseg.evaluation.compare`   ``compare_reports``, ``load_predictions`` (two reports, paired tests)
- :mod:`~kerasseg.evaluation.formatting` p-values, percentages, the text summary
- :mod:`~kerasseg.evaluation.reproduce` ``reproduce_table`` (CRU-Net Table 1, Zhu Table 2)
"""

from kerasseg.evaluation.metrics import (  # noqa: F401
    dice, hausdorff, hd95, iou, per_image_metrics, pooled_dice, precision, sensitivity, summarize,
    trimap_accuracy, trimap_bands,
)
from kerasseg.evaluation.stats import bootstrap_ci, mcnemar_exact, paired_tests, wilcoxon_dice  # noqa: F401


def __getattr__(name):  # lazy: report/reproduce pull in matplotlib and Keras
    if name in ("evaluate_run", "evaluate_arrays", "robustness_table"):
        from kerasseg.evaluation import report

        return getattr(report, name)
    if name in ("compare_reports", "load_predictions"):
        from kerasseg.evaluation import compare

        return getattr(compare, name)
    if name in ("reproduce_table", "TABLES"):
        from kerasseg.evaluation import reproduce

        return getattr(reproduce, name)
    raise AttributeError(name)
