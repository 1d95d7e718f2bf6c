"""Every benchmark runs end to end with tiny sizes (the numbers are meaningless; the code must not rot)."""

import json

import numpy as np
import pytest

from benchmarks import common, run_all


def test_target_lines():
    assert common.target("x", 5.0, 10.0, "ms", higher_is_better=False)["met"] is True
    t = common.target("x", 15.0, 10.0, "ms", higher_is_better=False)
    assert t["met"] is False and "missed by 50%" in t["note"]
    t = common.target("x", 300.0, 500.0, "ROIs/s", higher_is_better=True)
    assert t["met"] is False and "missed by 40%" in t["note"]
    assert common.target("x", None, 1.0, "GB", False)["met"] is None


def test_markdown_table():
    md = common.markdown_table([{"a": 1, "b": 0.123456}, {"a": 2, "c": "z"}])
    lines = md.strip().splitlines()
    assert lines[0] == "| a | b | c |" and len(lines) == 4 and "0.1235" in lines[2]


def test_crf_problem_and_case():
    from benchmarks import bench_crf

    img, unary = bench_crf.problem(2, 16)
    assert img.shape == (2, 16, 16, 1) and unary.shape == (2, 16, 16, 2)
    assert abs(float(img.mean())) < 1e-5
    refused = bench_crf.run_case("exact", 128, (2,), 1, 1)
    assert "refused" in refused


def test_densecrf_matches_our_exact_crf():
    """The pydensecrf2 side of the comparison solves the same problem (labels agree)."""
    from benchmarks import bench_densecrf

    if bench_densecrf.densecrf_available():
        pytest.skip(bench_densecrf.densecrf_available())
    res = bench_densecrf.run("tiny")
    row = res["rows"][0]
    assert row["label_agreement_exact"] >= 0.97 and row["label_agreement_lowrank"] >= 0.97
    assert row["densecrf_ms_per_image"] > 0


def test_run_all_tiny(tmp_path):
    names = ["crf", "training", "flops", "serving"]
    res = run_all.run_all("tiny", tmp_path, names)
    for name in names:
        r = json.loads((tmp_path / f"{name}.json").read_text())
        assert not r.get("error"), r.get("error")
        assert r["rows"], name
    md = (tmp_path / "results.md").read_text()
    assert "### Targets (issue 7)" in md and "adversarial/plain" in md
    rows = res["benchmarks"]["crf"]["rows"]
    crf_rows = [r for r in rows if r["mode"] in ("exact", "lowrank", "scalable")]
    overhead_rows = [r for r in rows if r["mode"].startswith("crunet forward")]
    assert {r["mode"] for r in crf_rows} == {"exact", "lowrank", "scalable"}
    assert all(np.isfinite(r["fwd_ms_per_image_it2"]) for r in crf_rows)
    assert len(overhead_rows) == 3 and all(np.isfinite(r["crf_overhead_pct"]) for r in overhead_rows)
    flops = res["benchmarks"]["flops"]["rows"][0]
    assert flops["fwd_mflops_per_roi"] > 1 and flops["matmul_peak_gflops"] > 0


@pytest.mark.slow
def test_fit_memory_tiny():
    from benchmarks import bench_fit_memory

    res = bench_fit_memory.run("tiny")
    row = res["rows"][0]
    assert row["exit"] == 0, row.get("error")
    assert 100 < row["peak_rss_mb"] < 64000
