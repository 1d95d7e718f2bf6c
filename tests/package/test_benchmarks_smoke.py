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
    crf_rows = [r for r in rows if r["mode"] in ("exact", "lowrank", "grid")]
    overhead_rows = [r for r in rows if r["mode"].startswith("crunet forward")]
    assert {r["mode"] for r in crf_rows} == {"exact", "lowrank", "grid"}
    assert all(np.isfinite(r["fwd_ms_per_image_it2"]) for r in crf_rows)
    assert len(overhead_rows) == 3 and all(np.isfinite(r["crf_overhead_pct"]) for r in overhead_rows)
    serving = res["benchmarks"]["serving"]
    ens = [r for r in serving["rows"] if r.get("members", 1) > 1]
    assert len(ens) == 1 and ens[0]["members"] == 2 and ens[0]["tta"] == "flips"
    assert np.isfinite(ens[0]["p50_vs_single"]) and ens[0]["p50_vs_single"] > 0
    assert any("ensemble 2 x flips TTA" in t["target"] for t in serving["targets"])
    flops = res["benchmarks"]["flops"]["rows"][0]
    assert flops["fwd_mflops_per_roi"] > 1 and flops["matmul_peak_gflops"] > 0


@pytest.mark.slow
def test_fit_memory_tiny():
    from benchmarks import bench_fit_memory

    res = bench_fit_memory.run("tiny")
    row = res["rows"][0]
    assert row["exit"] == 0, row.get("error")
    assert 100 < row["peak_rss_mb"] < 64000


def test_child_peak_rss_is_the_childs_own():
    """A big runner must not inflate a child's measured peak (ru_maxrss survives fork + exec)."""
    import sys

    ballast = np.ones(400 * 2**20 // 8)  # 400 MB resident in this process
    small, code, _ = common.child_peak_rss_mb([sys.executable, "-c", "pass"])
    big, code2, _ = common.child_peak_rss_mb(
        [sys.executable, "-c", "import numpy as np; a = np.ones(300 * 2**20 // 8); print(a.sum())"])
    assert code == 0 and code2 == 0
    assert small < 100 < 300 < big < 300 + small + 100
    assert ballast.sum() > 0
    assert common.maxrss_mb() >= 400


def test_flop_count_by_hand():
    """Counted FLOPs: a transposed conv is charged per input position (TF's profiler charges it
    per output position), and the CRF's mean field is counted in the form the layer runs."""
    import keras

    from benchmarks.bench_flops import conv_flops, crf_flops
    from kerasseg.layers.crf import CRFRNN

    x = keras.Input((8, 8, 3))
    y = keras.layers.Conv2D(4, 3, padding="valid")(x)  # 6x6x4 outputs, 3*3*3 taps each
    z = keras.layers.Conv2D(5, 1)(y)  # 6x6x5, 4 taps
    u = keras.layers.Conv2DTranspose(2, 6, strides=6)(keras.layers.GlobalAveragePooling2D(keepdims=True)(z))
    model = keras.Model(x, u)
    want = 2 * (6 * 6 * 4 * 27 + 6 * 6 * 5 * 4 + 1 * 1 * 6 * 6 * 5 * 2)
    assert conv_flops(model) == want
    exact = crf_flops(CRFRNN(mode="exact"), 40, 40, 5)
    assert exact == 2 * 1600 * 1600 * 2 * 2 * 5
    low = crf_flops(CRFRNN(mode="lowrank"), 40, 40, 5)
    assert 0 < low < exact / 10
    assert crf_flops(CRFRNN(mode="grid"), 40, 40, 5) is None


def test_postprocessing_benchmark_tiny():
    from benchmarks import bench_postprocessing

    res = bench_postprocessing.run("tiny")
    assert {r["shape"] for r in res["rows"]} == {"disk", "snake", "spiral"}
    assert all(r["equal_to_scipy"] for r in res["rows"])
    sp = bench_postprocessing.shapes(15)["spiral"]
    from scipy import ndimage as ndi

    assert ndi.label(sp, np.ones((3, 3)))[1] == 1  # the spiral is one long component


def test_bench_cv_skips_without_the_development_set_and_splits_by_group(tmp_path, monkeypatch, capsys):
    from benchmarks import bench_cv
    from kerasseg.data.dataset import load_npz
    from kerasseg.data.splits import groups_across_splits

    monkeypatch.setenv("KERASSEG_LESION_DEV", str(tmp_path / "absent.npz"))
    assert bench_cv.main(["--work", str(tmp_path / "w")]) == 0
    assert "skipped" in capsys.readouterr().out and not (tmp_path / "w").exists()
    rng = np.random.default_rng(0)
    groups = np.repeat([f"c{i}" for i in range(10)], 5)
    src = tmp_path / "dev.npz"
    np.savez(src, images=rng.random((50, 8, 8)).astype(np.float32), masks=np.ones((50, 8, 8), np.uint8),
             split=np.full(50, "train"), ids=[f"r{i}" for i in range(50)], group=groups)
    ds = load_npz(bench_cv.split_data(src, tmp_path / "split.npz", 0.2))
    assert ds.counts()["test"] == 10 and groups_across_splits(ds.split, ds.group) == []
