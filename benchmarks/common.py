"""Shared helpers: machine description, timing, target lines, atomic JSON/Markdown output."""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from kerasseg import onednn_enabled

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def machine() -> dict:
    import numpy as np
    import tensorflow as tf

    cpu = platform.processor() or ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "load_avg_1min_at_start": load,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "onednn": onednn_enabled(),
    }


def maxrss_mb() -> float:
    """Peak resident set size of this process, MB.

    Linux: VmHWM of /proc/self/status, which starts afresh when a program is exec'd. (ru_maxrss
    does not: a benchmark case started by a runner that already holds 3 GB reports >= 3 GB.)
    Elsewhere: ru_maxrss.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# A tiny Python process forks and execs the command and reports the child's ru_maxrss (KiB) on its
# last stdout line. The child's high-water mark then starts from this wrapper's ~10 MB, not from
# the benchmark runner's size (ru_maxrss is inherited through fork and kept across exec).
_PEAK_WRAPPER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execvp(sys.argv[1], sys.argv[1:])\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "print(usage.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def child_peak_rss_mb(cmd: list[str], env=None, timeout=None) -> tuple[float, int, str]:
    """Run ``cmd``; returns (its peak RSS in MB, its exit code, the last two lines of its stderr)."""
    proc = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *cmd], env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = proc.stdout.strip().splitlines()
    peak = int(lines[-1]) / 1024.0 if lines and lines[-1].isdigit() else float("nan")
    return peak, proc.returncode, " | ".join(proc.stderr.strip().splitlines()[-2:])


def timed(fn, repeats: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after ``warmup`` calls (results forced to host)."""
    for _ in range(warmup):
        _force(fn())
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        _force(fn())
        out.append(time.perf_counter() - t)
    return out


def _force(x):
    import tensorflow as tf

    for t in tf.nest.flatten(x):
        if hasattr(t, "numpy"):
            t.numpy()
    return x


def target(name: str, measured, goal, unit: str, higher_is_better: bool) -> dict:
    """A target line: met or missed, and by how much (relative to the goal)."""
    if measured is None:
        return {"target": name, "goal": goal, "measured": None, "unit": unit, "met": None, "note": "not measured"}
    met = measured >= goal if higher_is_better else measured <= goal
    if met:
        note = "met"
    elif higher_is_better:
        note = f"missed by {100 * (goal - measured) / goal:.0f}% ({measured:.3g} < {goal:.3g} {unit})"
    else:
        note = f"missed by {100 * (measured - goal) / goal:.0f}% ({measured:.3g} > {goal:.3g} {unit})"
    return {"target": name, "goal": goal, "measured": measured, "unit": unit, "met": met, "note": note}


def print_targets(targets):
    for t in targets:
        m = "n/a" if t["measured"] is None else f"{t['measured']:.4g}"
        print(f"  TARGET {t['target']}: goal {t['goal']} {t['unit']}, measured {m} -> {t['note']}", flush=True)


def run_json_subprocess(args: list[str], timeout: float) -> dict:
    """Run ``python -m <args>`` in a fresh process; its last stdout line is a JSON object."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, env=env,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` atomically (kerasseg's own helper), creating the results folder if needed."""
    from kerasseg.fileio import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)


def disc_rois(rng, n, size):
    """Yield ``n`` synthetic ROIs ``(mask, image)``: a disc-shaped mass of contrast 1.5 in unit-0.4 noise.

    A generator, so a caller may draw more from ``rng`` between ROIs (the CRF problem draws its
    unary noise there) and keep one reproducible random stream.
    """
    import numpy as np

    yy, xx = np.mgrid[:size, :size]
    for _ in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        r = rng.uniform(0.15, 0.28) * size
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r).astype(np.float32)
        yield m, 1.5 * m + 0.4 * rng.standard_normal((size, size))


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    return "\n".join(out) + "\n"


def markdown_targets(targets: list[dict]) -> str:
    rows = [
        {"target": t["target"], "goal": f"{t['goal']} {t['unit']}", "measured": _fmt(t["measured"]), "result": t["note"]}
        for t in targets
    ]
    return markdown_table(rows)
