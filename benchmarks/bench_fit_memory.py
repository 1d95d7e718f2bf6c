"""Peak resident memory of ``kerasseg fit`` on an INbreast-sized set (58 train ROIs x 4 flips).

The built-in phantom has the INbreast split sizes (58 train / 12 val / 58 test, 40x40). ``kerasseg fit``
runs in a child process started by a tiny wrapper (``common.child_peak_rss_mb``); its peak RSS is
``ru_maxrss`` of that child from ``os.wait4``, which starts from the wrapper's ~10 MB rather than from
this runner's size.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

from benchmarks.common import child_peak_rss_mb, print_targets, target

CONFIGS = {"tiny": ("crunet-l067",), "quick": ("crunet-l067", "zhu-adv-multifcn-crf"),
           "full": ("crunet-l067", "zhu-adv-multifcn-crf")}
EPOCHS = {"tiny": 1, "quick": 2, "full": 5}


def fit_peak_rss_mb(config, epochs):
    exe = shutil.which("kerasseg")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ([exe] if exe else [sys.executable, "-m", "kerasseg"]) + [
            "fit", config, "--out", f"{tmp}/run", "--epochs", str(epochs)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        return child_peak_rss_mb(cmd, env=env)


def run(mode="quick"):
    rows, targets = [], []
    for config in CONFIGS[mode]:
        peak, code, err = fit_peak_rss_mb(config, EPOCHS[mode])
        row = {"config": config, "epochs": EPOCHS[mode], "peak_rss_mb": peak, "exit": code}
        if code != 0:
            row["error"] = err
        rows.append(row)
        print("  fit-memory", row, flush=True)
        targets.append(target(f"kerasseg fit peak RSS, {config}", peak / 1024.0 if code == 0 else None, 2.5, "GB",
                              False))
    return {"name": "fit_memory", "rows": rows, "targets": targets}


if __name__ == "__main__":
    res = run("quick" if "--quick" in sys.argv else "full")
    print_targets(res["targets"])
