"""Run every benchmark: ``python -m benchmarks.run_all [--quick] [--out benchmarks/results] [--only NAME ...]``.

Writes ``<out>/<name>.json`` per benchmark, ``<out>/all.json`` and ``<out>/results.md`` (Markdown tables
with the machine description and every issue-7 target beside the measured value).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks import common

NAMES = ("crf", "densecrf", "training", "flops", "serving", "fit_memory", "postprocessing")


def _module(name):
    import importlib

    return importlib.import_module(f"benchmarks.bench_{name}")


def run_all(mode="full", out="benchmarks/results", only=None) -> dict:
    out = Path(out)
    results = {"machine": common.machine(), "mode": mode, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "benchmarks": {}}
    previous = out / "all.json"
    if only and previous.exists():  # re-running some benchmarks: keep the others' results
        try:
            old = json.loads(previous.read_text())
            results["benchmarks"] = {k: v for k, v in old.get("benchmarks", {}).items() if k not in only}
        except (OSError, ValueError):
            pass
    training_rows = results["benchmarks"].get("training", {}).get("rows")
    for name in only or NAMES:
        print(f"== {name} ({mode})", flush=True)
        t = time.perf_counter()
        mod = _module(name)
        try:
            res = mod.run(mode, training_rows=training_rows) if name == "flops" else mod.run(mode)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            res = {"name": name, "rows": [], "targets": [], "error": f"{type(exc).__name__}: {exc}"}
            print(f"  ERROR {res['error']}", flush=True)
        res["seconds"] = time.perf_counter() - t
        res["mode"] = mode
        res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        if name == "training":
            training_rows = res["rows"]
        common.print_targets(res.get("targets", []))
        results["benchmarks"][name] = res
        common.atomic_write(out / f"{name}.json", json.dumps(res, indent=1, default=str))
    common.atomic_write(out / "all.json", json.dumps(results, indent=1, default=str))
    common.atomic_write(out / "results.md", to_markdown(results))
    return results


def to_markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} CPU cores, {m['gpus']} GPU; TensorFlow {m['tensorflow']}, "
             f"Python {m['python']}, oneDNN {m.get('onednn')}; 1-min load average at start {m['load_avg_1min_at_start']}. "
             f"Mode: {results['mode']}, {results['started']}.\n"]
    targets = []
    for name in [n for n in NAMES if n in results["benchmarks"]]:
        res = results["benchmarks"][name]
        lines.append(f"### {name} ({res.get('mode', results['mode'])} mode, {res.get('finished', '')})\n")
        if res.get("error"):
            lines.append(f"Error: {res['error']}\n")
        if res.get("note"):
            lines.append(f"Note: {res['note']}\n")
        lines.append(common.markdown_table(res["rows"]))
        targets += res.get("targets", [])
    lines.append("### Targets (issue 7)\n")
    lines.append(common.markdown_targets(targets))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats/epochs (minutes instead of tens)")
    p.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds; numbers meaningless)")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--only", nargs="+", choices=NAMES)
    a = p.parse_args(argv)
    mode = "tiny" if a.tiny else "quick" if a.quick else "full"
    run_all(mode, a.out, a.only)


if __name__ == "__main__":
    main(sys.argv[1:])
