"""Peak resident memory of ``kerasseg fit`` on an INbreast-sized set (58 train ROIs x 4 flips).

The built-in phantom has the INbreast split sizes (58 train / 12 val / 58 test, 40x40). ``kerasseg fit``
runs in a child process; its peak RSS comes from ``os.wait4`` (ru_maxrss of that child alone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

from benchmarks.common import print_targets, target

CONFIGS = {"tiny": ("crunet-l067",), "quick": ("crunet-l067", "zhu-adv-multifcn-crf"),
           "full": ("crunet-l067", "zhu-adv-multifcn-crf")}
EPOCHS = {"tiny": 1, "quick": 2, "full": 5}


def fit_peak_rss_mb(config, epochs):
    exe = shutil.which("kerasseg")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ([exe] if exe else [sys.executable, "-m", "kerasseg"]) + [
            "fit", config, "--out", f"{tmp}/run", "--epochs", str(epochs)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        err = proc.stderr.read().decode(errors="replace").strip().splitlines()[-2:]
        proc.stderr.close()
        code = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024.0, code, " | ".join(err)


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
