"""Dice at boxes other than the tight one: tight-trained vs box-jitter ("anybox") vs margin-matched models.

Data: ``../shared/data/lesion-dev.npz`` beside the checkout (290 ROIs from 58 real INbreast contours,
``group`` = the contour, with context windows). Not shipped: without it this benchmark says so and
exits 0.

Protocol (the held-out fold is never used for a choice):

1. grouped K-fold over all ROIs (:func:`kerasseg.data.splits.group_kfold`, whole contours);
2. per fold, 15 % of the training contours become the validation split (best epoch), the rest train;
3. every model (``--models``) is trained on every fold with :func:`kerasseg.training.fit`:
   ``tight`` (the shipped row, papers' protocol), ``anybox`` (``configs/<config>-anybox.yaml``'s box
   jitter), ``m<margin>`` (margin-matched: box jitter fixed at that margin, no shift, no tight) and
   ``NAME=CONFIG`` (any config, e.g. another jitter recipe);
4. each fold model is scored on its held-out fold at every ``--margins`` box (:func:`kerasseg.data.boxes.box_view`,
   the boxes of ``kerasseg evaluate --box-margin``), beside the model-free prior at the same boxes (the
   thresholded mean training mask cut at the same margin) and Otsu.

    python -m benchmarks.bench_anybox --models tight,anybox,m0.3 --folds 5 --epochs 30

Results: ``benchmarks/results/anybox.json`` / ``anybox.md`` (per model and margin: mean ± std over folds)
and ``anybox.png`` (the curves);
fold runs stay in ``--work`` (a finished fold is reused when the benchmark is run again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import atomic_write, machine

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "lesion-dev.npz"
RESULTS = REPO / "benchmarks" / "results"
MARGINS = (0.0, 0.1, 0.15, 0.2, 0.3, 0.4)


def lesion_dev_path() -> Path | None:
    p = Path(os.environ.get("KERASSEG_LESION_DEV", DEFAULT_DATA))
    return p if p.is_file() else None


def fold_files(data: Path, work: Path, k: int, val_fraction: float = 0.15) -> list[Path]:
    """One dataset file per fold: held-out fold = test, 15 % of the other contours = val."""
    from kerasseg.data.dataset import load_npz, save_npz
    from kerasseg.data.splits import group_kfold, group_split

    ds = load_npz(data)
    fold = group_kfold(ds.groups(), k, seed=0)
    out = []
    for i in range(k):
        path = work / f"fold-{i}.npz"
        rest = fold != i
        split = np.full(len(ds), "test", dtype=object)
        inner = group_split(ds.groups()[rest], val_fraction, seed=i)   # "test" here = val
        split[rest] = np.where(inner == "test", "val", "train")
        if not path.is_file():
            save_npz(ds.with_split(split.astype(str)), path)
        out.append(path)
    return out


def model_config(name: str, base: str, work: Path) -> str:
    """The config (name or path) of one model kind (``NAME=CONFIG``: any config under that name)."""
    if "=" in name:
        return name.split("=", 1)[1]
    if name == "tight":
        return base
    if name == "anybox":
        return f"{base}-anybox"
    if name.startswith("m"):
        m = float(name[1:])
        path = work / f"{base}-{name}.yaml"
        path.write_text(f"extends: {base}\nname: {base}-{name}\n"
                        f"data:\n  box_jitter: {{margin: [{m}, {m}], shift: 0.0, tight: 0.0}}\n")
        return str(path)
    raise SystemExit(f"unknown model {name!r}: tight, anybox or m<margin>")


def score(run_dir: Path, data: Path, margins) -> dict:
    """Per margin: the model's, the prior's and Otsu's mean Dice on the held-out fold."""
    from kerasseg.data.boxes import box_view
    from kerasseg.data.dataset import load_npz
    from kerasseg.models.segmenter import predict_probability, segment_function
    from kerasseg.training.baselines import otsu_masks, prior_mask
    from kerasseg.training.metrics import binarize, dice_per_image
    from kerasseg.training.run import load_run

    ds = load_npz(data)
    model, _ = load_run(run_dir)
    fn = segment_function(model)
    out = {}
    for m in margins:
        test = box_view(ds.subset("test"), m)
        train = box_view(ds.subset("train"), m)
        pred = binarize(predict_probability(fn, test.images))
        prior = np.broadcast_to(prior_mask(train.masks), test.masks.shape)
        out[f"{m:g}"] = {k: float(np.mean(np.asarray(dice_per_image(p, test.masks)))) for k, p in
                         (("model", pred), ("prior", prior), ("otsu", otsu_masks(test.images)))}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="tight,anybox,m0.3")
    ap.add_argument("--config", default="crunet-l067")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--margins", default=",".join(f"{m:g}" for m in MARGINS))
    ap.add_argument("--work", default=str(REPO / "runs" / "bench_anybox"))
    ap.add_argument("--results", default="anybox")
    args = ap.parse_args(argv)
    data = lesion_dev_path()
    if data is None:
        print("bench_anybox: lesion-dev.npz not found (set KERASSEG_LESION_DEV); skipped")
        return 0
    import kerasseg  # noqa: F401  (oneDNN before TensorFlow)
    from kerasseg.training.fit import fit

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    files = fold_files(data, work, args.folds)
    margins = [float(m) for m in args.margins.split(",")]
    results_path = RESULTS / f"{args.results}.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.update({"machine": machine(), "folds": args.folds, "epochs": args.epochs,
                    "config": args.config, "data": "lesion-dev.npz"})
    results.setdefault("models", {})
    for spec in args.models.split(","):
        cfg = model_config(spec, args.config, work)
        name = spec.split("=", 1)[0]
        per_fold, seconds = [], []
        for i, f in enumerate(files):
            run = work / f"{args.config}-{name}" / f"fold-{i}"
            t0 = time.time()
            if not (run / "run.json").is_file() or json.loads((run / "run.json").read_text()).get("status") != "finished":
                fit(cfg, data=str(f), out_dir=str(run), epochs=args.epochs, seed=0, verbose=0)
            seconds.append(time.time() - t0)
            per_fold.append(score(run, f, margins))
            print(f"{name} fold {i}: " + ", ".join(f"m{m}: {v['model']:.4f} (prior {v['prior']:.4f})"
                                                  for m, v in per_fold[-1].items()), flush=True)
        summary = {}
        for m in per_fold[0]:
            row = {}
            for k in ("model", "prior", "otsu"):
                v = np.array([p[m][k] for p in per_fold])
                row[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                          "folds": v.tolist()}
            summary[m] = row
        results["models"][name] = {"config": cfg if not cfg.endswith(".yaml") else Path(cfg).name,
                                   "margins": summary, "seconds_per_fold": float(np.mean(seconds))}
        atomic_write(results_path, json.dumps(results, indent=2))
        atomic_write(RESULTS / f"{args.results}.md", markdown(results))
        plot(results, RESULTS / f"{args.results}.png")
    print(markdown(results))
    return 0


def plot(results: dict, path: Path) -> None:
    """Dice vs box margin per model (mean ± std over folds), the prior dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    first = None
    for name, r in results["models"].items():
        ms = sorted(r["margins"], key=float)
        x = [float(m) for m in ms]
        mean = np.array([100 * r["margins"][m]["model"]["mean"] for m in ms])
        std = np.array([100 * r["margins"][m]["model"]["std"] for m in ms])
        style = "-o" if name in ("tight", "anybox") else ":."
        ax.plot(x, mean, style, label=name, lw=2 if name in ("tight", "anybox") else 1)
        ax.fill_between(x, mean - std, mean + std, alpha=0.12)
        first = first or r
    ms = sorted(first["margins"], key=float)
    ax.plot([float(m) for m in ms], [100 * first["margins"][m]["prior"]["mean"] for m in ms], "k--",
            label="prior (mean training mask at the same boxes)")
    ax.set_xlabel("box margin scored at (each side grown by m x box size)")
    ax.set_ylabel("Dice % (held-out folds)")
    ax.set_title(f"{results['config']} on lesion-dev, {results['folds']}-fold grouped CV, {results['epochs']} epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def markdown(results: dict) -> str:
    models = results["models"]
    margins = sorted({m for r in models.values() for m in r["margins"]}, key=float)
    head = "| trained on \\ scored at margin | " + " | ".join(margins) + " |"
    lines = [f"lesion-dev.npz, {results['folds']}-fold grouped CV (whole contours), {results['config']}, "
             f"{results['epochs']} epochs; Dice % on the held-out folds, mean ± std over folds. "
             "Margin m: every side of the tight box grown by m times the box size "
             "(`kerasseg evaluate --box-margin m`).", "", head,
             "|---" * (len(margins) + 1) + "|"]

    def cell(r, m, k):
        v = r["margins"].get(m)
        return "–" if v is None else f"{100 * v[k]['mean']:.1f} ± {100 * v[k]['std']:.1f}"

    for name, r in models.items():
        lines.append(f"| {name} | " + " | ".join(cell(r, m, "model") for m in margins) + " |")
    first = next(iter(models.values()))
    lines.append("| model-free prior (mean training mask at the same boxes) | "
                 + " | ".join(cell(first, m, "prior") for m in margins) + " |")
    lines.append("| Otsu | " + " | ".join(cell(first, m, "otsu") for m in margins) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
