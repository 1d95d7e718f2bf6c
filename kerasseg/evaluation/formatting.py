"""Numbers for people: p-values, percentages and the short text summary of a report."""

from __future__ import annotations

from kerasseg.evaluation import metrics as M


def format_p(p) -> str:
    """A p-value for people: 4 significant digits, and '< 1e-300' where it underflows to 0."""
    if p is None:
        return "n/a"
    return "< 1e-300" if p == 0 else f"{p:.4g}"


def pct(v):
    return "n/a" if v is None else f"{100 * v:.2f}"


def format_summary(m: dict) -> str:
    """A short text table of the main numbers of a metrics dict."""
    lines = [
        f"split {m.get('split')}  n={m.get('n')}  data {m.get('data_hash')}",
        f"  Dice (per-image mean ± std)  {pct(m['dice_mean'])} ± {pct(m['dice_std'])} %",
        f"  Dice (pooled over pixels)    {pct(m['dice_pooled'])} %",
        f"  IoU (mean)                   {pct(m['iou_mean'])} %",
        f"  Sensitivity / precision      {pct(m['sensitivity_mean'])} / {pct(m['precision_mean'])} %",
        f"  HD95 (mean)                  {m['hd95_px_mean']:.2f} px"
        + ("" if m.get("hd95_mm_mean") is None else f" / {m['hd95_mm_mean']:.2f} mm"),
        "  Trimap accuracy w=1..5       "
        + " ".join(pct(m["trimap_accuracy"].get(str(w))) for w in M.TRIMAP_WIDTHS) + " %",
    ]
    return "\n".join(lines)
