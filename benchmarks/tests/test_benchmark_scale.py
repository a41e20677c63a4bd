"""The scale benchmark (``benchmarks/scale.py``): its memory probes, a tiny sweep through the real
workers, the out-of-memory and wall-time guards, the exponent fit, and the generated region of its
page and the plots rebuilt from hand-made records (the plots need matplotlib, which comes with the
``bench`` extra)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pymetis
import pytest

from skvqgnn.samplers import metis_partition
from tests.conftest import random_graph

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scale  # noqa: E402
from _common import GENERATED_END, GENERATED_START, generated_region  # noqa: E402

MIB = 2**20


def _touch(mib: int) -> np.ndarray:
    return np.ones(mib * MIB // 8)  # ones: every page written, so resident


# --------------------------------------------------------------------------------------------
# Memory probes
# --------------------------------------------------------------------------------------------


def test_resetting_the_peak_rss_forgets_a_freed_allocation():
    before = scale.status_kib("VmRSS")
    block = _touch(200)
    del block
    assert scale.status_kib("VmHWM") >= before + 190 * 1024  # the peak remembers it
    scale.reset_peak_rss()
    assert scale.status_kib("VmHWM") < before + 40 * 1024  # and forgets it after the reset


def test_memory_probe_measures_a_transient_peak_and_keeps_the_absolute_one():
    probe = scale.MemoryProbe()
    probe.start()
    block = _touch(120)
    del block
    region = probe.stop()
    assert region["peak_mib"] >= 110
    assert region["rss_before_mib"] > 0
    probe.start()  # a region allocating nothing: the previous peak is gone
    quiet = probe.stop()
    assert quiet["peak_mib"] < 30
    assert probe.absolute_peak_mib() >= region["rss_before_mib"] + 110


def test_torch_allocation_peak_counts_a_freed_tensor():
    import torch
    from torch.profiler import ProfilerActivity, profile

    profiler = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    profiler.start()
    t = torch.ones(4 * MIB // 4)  # 4 MiB of float32
    del t
    profiler.stop()
    assert 4.0 <= scale.torch_allocation_peak(profiler) < 4.5


def test_step_probe_measures_the_steps_after_warm_up_and_times_clean_epochs_only():
    probe = scale.StepProbe(scale.MemoryProbe(), warmup=2, measured=3, profile=True)
    hooks = probe.callback()
    peaks = []
    for _ in range(3):  # 9 steps: 2 warm-up, 3 measured (the 2nd allocates), 1 profiled, 3 free
        hooks.on_epoch_start(None)
        for i in range(3):
            hooks.on_step_start(None, np.arange(3))
            if len(probe.steps) == 1 and i == 0:
                block = _touch(64)
                del block
            hooks.on_step_end(None, np.arange(3), 3)
            peaks.append(len(probe.steps))
    assert peaks == [0, 0, 1, 2, 3, 3, 3, 3, 3]
    assert len(probe.steps) == 3 and probe.steps[1]["peak_mib"] >= 60
    assert probe.torch_peak_mib is not None
    assert [e["timed"] for e in probe.epochs] == [False, False, True]
    assert [e["steps"] for e in probe.epochs] == [3, 3, 3]


# --------------------------------------------------------------------------------------------
# Workers and driver
# --------------------------------------------------------------------------------------------


def test_tiny_sweep_through_the_workers_gives_complete_positive_records():
    args = scale.parse_args(
        ["--sizes", "2000", "4000", "--degrees", "--features", "16", "--batch-size", "500"]
        + ["--codewords", "32", "--timed-epochs", "1", "--memory-limit-gib", "8"]
    )
    specs = scale.make_specs(args)
    assert [(s["n_nodes"], s["mode"]) for s in specs] == [
        (2000, "vq"),
        (2000, "full"),
        (4000, "vq"),
        (4000, "full"),
    ]
    specs = specs[:3]  # both modes, and VQ at two sizes: a worker costs seconds of imports
    lines = []
    records = scale.run_sweep(specs, timeout_s=300, report=lines.append)
    assert len(lines) == 3
    for spec, r in zip(specs, records, strict=True):
        assert r["fits"], r
        assert {k: r[k] for k in spec} == spec
        assert r["device"] == "cpu" and r["torch_threads"] >= 1
        assert r["n_edges"] > 0 and r["realised_degree"] > 5
        assert len(r["steps"]) == scale.MEMORY_STEPS
        assert all(s["peak_mib"] > 0 and s["rss_before_mib"] > 0 for s in r["steps"])
        assert r["step_peak_mib"] > 0 and r["torch_step_peak_mib"] > 0
        assert r["gpu_step_peak_mib"] is None
        assert r["epoch_times_clean"] and len(r["epoch_times_s"]) == 1
        assert r["epoch_time_s"] > 0 and r["fit_time_s"] > r["epoch_time_s"]
        assert r["steps_per_epoch"] == (1 if spec["mode"] == "full" else spec["n_nodes"] // 500)
        assert r["epochs"] == scale.epochs_for(spec)
        assert 0 < r["test_acc"] <= 1
        assert set(r["inference"]) == set(scale.INFERENCE_MODES[spec["mode"]])
        for result in r["inference"].values():
            assert result["time_s"] > 0 and result["peak_mib"] >= 0 and result["test_acc"] > 0
        assert ("agreement" in r) == (spec["mode"] == "vq")
        assert 0 < r.get("agreement", 1) <= 1
        assert r["absolute_peak_mib"] >= r["step_rss_before_mib"] + r["step_peak_mib"]


def test_a_graph_too_large_for_the_memory_limit_does_not_fit_and_larger_ones_are_skipped():
    args = ["--sizes", "2000", "--degrees", "--modes", "vq", "--features", "2000000"]
    spec = {**scale.make_specs(scale.parse_args(args))[0], "memory_limit_gib": 4.0}
    # the features alone would take 32 GB (float64 noise): the generator fails at once
    records = scale.run_sweep([spec, {**spec, "n_nodes": 4000}], timeout_s=120)
    assert not records[0]["fits"]
    assert records[0]["failed_stage"] == "data"
    assert records[0]["reason"].startswith("MemoryError")
    assert not records[1]["fits"]
    assert records[1]["reason"] == "not run: n = 2000 did not fit"


def test_a_worker_past_its_wall_time_does_not_fit():
    spec = scale.make_specs(scale.parse_args(["--sizes", "2000", "--degrees", "--modes", "vq"]))
    record = scale.run_worker(spec[0], timeout_s=0.2)
    assert not record["fits"]
    assert record["reason"] == "wall-time limit of 0.2 s exceeded"


def test_out_of_memory_inside_a_stage_is_a_record_other_errors_are_raised(monkeypatch):
    def fail(spec, record):
        record["failed_stage"] = "fit"
        raise RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: 8 GB")

    monkeypatch.setattr(scale, "measure", fail)
    record = scale.run_config({"n_nodes": 10})
    assert record["fits"] is False and record["failed_stage"] == "fit"
    assert "can't allocate memory" in record["reason"]

    def metis(spec, record):
        record["failed_stage"] = "fit"
        metis_partition(random_graph(50, 4, seed=0), 4, 0)

    def no_memory(*args, **kwargs):  # what pymetis raises when METIS cannot allocate
        raise RuntimeError("Caught an unknown exception!")

    monkeypatch.setattr(pymetis, "part_graph", no_memory)
    monkeypatch.setattr(scale, "measure", metis)
    record = scale.run_config({"n_nodes": 10})
    assert record["fits"] is False and record["failed_stage"] == "fit"
    assert record["reason"].startswith("RuntimeError: METIS could not partition the graph")

    def broken(spec, record):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(scale, "measure", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        scale.run_config({"n_nodes": 10})


# --------------------------------------------------------------------------------------------
# Analysis and report
# --------------------------------------------------------------------------------------------


def test_fit_exponent_recovers_power_laws():
    n = [1e4, 3e4, 1e5, 3e5, 1e6]
    assert scale.fit_exponent(n, [2.5e-5 * x for x in n]) == pytest.approx(1, abs=1e-6)
    assert scale.fit_exponent(n, [7.0 * x**0.5 for x in n]) == pytest.approx(0.5, abs=1e-6)
    assert scale.fit_exponent(n, [3.0] * 5) == pytest.approx(0, abs=1e-9)
    assert scale.fit_exponent([1e4], [1.0]) is None
    assert scale.fit_exponent([1e4, 1e4], [1.0, 2.0]) is None


META = {
    "command": "python benchmarks/scale.py",
    "date": "2026-01-01 00:00 UTC",
    "cpu_count": 2,
    "cpu_model": "cpu",
    "memory_gib": 24.0,
    "python": "3.11",
    "platform": "linux",
    "skvqgnn": "0.1.0",
    "git": "abc",
    "sizes": [10_000, 100_000, 1_000_000],
    "avg_degree": 10.0,
    "degrees": [5.0, 10.0, 20.0],
    "degree_nodes": 100_000,
    "modes": ["vq", "full"],
    "backbone": "gcn",
    "n_features": 64,
    "n_classes": 5,
    "batch_size": 1024,
    "n_codewords": 256,
    "sampler": "cluster",
    "seed": 0,
    "memory_limit_gib": 18.0,
    "timeout_s": 3600.0,
}


def _record(n: int, mode: str, degree: float = 10.0, step_peak: float = 20.0, **extra) -> dict:
    """A fitted configuration whose epoch time is exactly ∝ n · d."""
    inference = {"exact": {"time_s": 1e-6 * n, "peak_mib": 1e-4 * n, "test_acc": 0.9}}
    if mode == "vq":
        inference["vq"] = {"time_s": 5e-6 * n, "peak_mib": 12.0, "test_acc": 0.89}
    record = {
        "n_nodes": n,
        "avg_degree": degree,
        "mode": mode,
        "fits": True,
        "device": "cpu",
        "torch": "2.13",
        "torch_threads": 1,
        "n_edges": int(n * degree),
        "step_peak_mib": step_peak if mode == "vq" else 1e-3 * n,
        "torch_step_peak_mib": 15.0,
        "step_rss_before_mib": 400.0,
        "epoch_time_s": 1e-5 * n * degree,
        "epoch_times_clean": True,
        "steps_per_epoch": n // 1024 if mode == "vq" else 1,
        "epochs": 4,
        "fit_time_s": 2e-4 * n,
        "inference": inference,
        "absolute_peak_mib": 500.0,
        **({"agreement": 0.95} if mode == "vq" else {}),
    }
    return {**record, **extra}


def _records(large_vq_peak: float) -> list[dict]:
    records = [_record(n, "vq", step_peak=20.0) for n in (10_000, 100_000)]
    records.append(_record(1_000_000, "vq", step_peak=large_vq_peak))
    records += [_record(n, "full") for n in (10_000, 100_000)]
    records.append(
        {
            "n_nodes": 1_000_000,
            "avg_degree": 10.0,
            "mode": "full",
            "fits": False,
            "failed_stage": "fit",
            "reason": "MemoryError: Unable to allocate 7.63 GiB",
        }
    )
    records += [_record(100_000, mode, d) for mode in ("vq", "full") for d in (5.0, 20.0)]
    return records


def test_bars_pass_fail_and_not_run():
    records = _records(large_vq_peak=23.9)
    assert scale.memory_bar(records, META)[3] == "PASS"  # 23.9 <= 1.2 x 20
    assert scale.memory_bar(_records(large_vq_peak=24.1), META)[3] == "FAIL"
    unfit = [r for r in records if (r["n_nodes"], r["mode"]) != (1_000_000, "vq")]
    unfit.append({"n_nodes": 1_000_000, "avg_degree": 10.0, "mode": "vq", "fits": False})
    assert scale.memory_bar(unfit, META)[1:] == ("does not fit", "24.0 MiB", "FAIL")
    small_missing = [r for r in records if r["n_nodes"] != 10_000]
    assert scale.memory_bar(small_missing, META)[3] == "NOT RUN"

    bar = scale.inference_bar(records, META)  # largest with both: 1e6, VQ 5 x slower
    assert bar[1] == "n = 1,000,000: 0.20 ×, agreement 95.00%" and bar[3] == "FAIL"
    fast = [
        {**r, "agreement": 0.995, "inference": {**r["inference"], "vq": {"time_s": 1e-7 * 1e6}}}
        if (r["n_nodes"], r["mode"]) == (1_000_000, "vq")
        else r
        for r in records
    ]
    assert scale.inference_bar(fast, META)[3] == "PASS"  # 10 x faster, 99.5 %
    worse = [{**r, "agreement": 0.98} if r["mode"] == "vq" else r for r in fast]
    assert scale.inference_bar(worse, META)[3] == "FAIL"
    assert scale.inference_bar([], META)[3] == "NOT RUN"


def test_exponents_and_largest_graph_of_each_mode():
    records = _records(large_vq_peak=20.0)
    vq, full = scale.exponents(records, META, "vq"), scale.exponents(records, META, "full")
    assert vq["time_n"] == pytest.approx(1) and vq["time_degree"] == pytest.approx(1)
    assert vq["memory_n"] == pytest.approx(0, abs=1e-9) and full["memory_n"] == pytest.approx(1)
    assert (vq["n_sizes"], full["n_sizes"], full["n_degrees"]) == (3, 2, 3)
    fitted, failed = scale.largest_fits(records, META, "full")
    assert fitted["n_nodes"] == 100_000 and failed["n_nodes"] == 1_000_000
    fitted, failed = scale.largest_fits(records, META, "vq")
    assert fitted["n_nodes"] == 1_000_000 and failed is None


def test_from_json_rebuilds_the_region_and_the_plots(tmp_path):
    pytest.importorskip("matplotlib")
    saved = tmp_path / "scale.json"
    saved.write_text(json.dumps({"meta": META, "runs": _records(large_vq_peak=21.0)}))
    page = tmp_path / "doc" / "benchmarks" / "scale.md"
    page.parent.mkdir(parents=True)
    prose = "# Scale\n\nHow it is measured: `/proc/self/clear_refs`.\n\n"
    page.write_text(f"{prose}{GENERATED_START}\nstale\n{GENERATED_END}\n\n## Notes\n")
    plots = tmp_path / "doc"
    scale.main(["--from-json", str(saved), "--out", str(page), "--plots-dir", str(plots)])

    text = page.read_text()
    assert text.startswith(prose + GENERATED_START)  # the hand-written rest of the page kept
    assert text.endswith(f"{GENERATED_END}\n\n## Notes\n") and "stale" not in text
    region = generated_region(text)
    assert region.startswith("Produced on 2026-01-01 00:00 UTC by\n")
    assert "regenerated from the saved records" in region
    assert "| VQ per-step peak memory at n = 1,000,000 ≤ 1.2 × its value at n = 10,000" in region
    assert "| 21.0 MiB | 1.2 × 20.0 = 24.0 MiB | **PASS** |" in region
    assert "| n = 1,000,000: 0.20 ×, agreement 95.00% | 4 ×, 99% | **FAIL** |" in region
    assert "| full graph | 100,000 | 1,000,000 | does not fit (fit): MemoryError" in region
    assert "| VQ mini-batch | 1,000,000 | – (every size fitted) | – |" in region
    memory_n = scale.fit_exponent([1e4, 1e5, 1e6], [20.0, 20.0, 21.0])
    assert f"| VQ mini-batch | 1.00 (3 sizes) | 1.00 (3 degrees) | {memory_n:.2f} (3 sizes) |" in (
        region
    )
    assert "| full graph | 1.00 (2 sizes) | 1.00 (3 degrees) | 1.00 (2 sizes) |" in region
    # the plots are linked from the page's folder
    assert "](../scale_memory.png)" in region and "](../scale_time.png)" in region
    for name in (scale.MEMORY_PLOT, scale.TIME_PLOT):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # run again from two files: the later one's record of a configuration wins, in place
    newer = tmp_path / "newer.json"
    rerun = _record(1_000_000, "vq", step_peak=30.0)
    newer.write_text(json.dumps({"meta": {**META, "sizes": [1_000_000]}, "runs": [rerun]}))
    args = ["--from-json", str(saved), str(newer), "--out", str(page), "--plots-dir", str(plots)]
    scale.main(args)
    again = page.read_text()
    assert again.count(GENERATED_START) == 1 and again.startswith(prose)
    assert "| 30.0 MiB | 1.2 × 20.0 = 24.0 MiB | **FAIL** |" in again


def test_no_plot_when_nothing_fitted(tmp_path):
    records = [
        {"n_nodes": 4_000_000, "avg_degree": 10.0, "mode": mode, "fits": False, "reason": "x"}
        for mode in ("vq", "full")
    ]
    plots = (tmp_path / "memory.png", tmp_path / "time.png")
    scale.plot({}, records, plots)
    assert not plots[0].exists() and not plots[1].exists()
