"""kerasseg benchmarks (run by hand: ``python -m benchmarks.run_all [--quick] [--out benchmarks/results]``).

Every module has ``run(mode) -> dict`` with mode in {"tiny", "quick", "full"}; the dict holds
``rows`` (list of dicts, the table) and ``targets`` (issue-7 targets beside the measured value).
"""

import kerasseg  # noqa: F401  (before TensorFlow loads: the same CPU kernels as ``kerasseg fit``)
