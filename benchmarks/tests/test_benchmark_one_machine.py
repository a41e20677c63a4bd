"""The one-machine benchmarks: the memory stages of a fit (``memory_stages.py``) and the epoch
against its compute floor (``epoch_floor.py``): their measurement helpers, and their generated
regions rebuilt from records (no fits)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import epoch_floor  # noqa: E402
import local_csbm  # noqa: E402
import memory_stages  # noqa: E402
from test_benchmark_link import META  # noqa: E402


def _stages(peaks: dict[str, float]) -> list[dict]:
    return [
        {"stage": name, "peak_gib": peak, "above_gib": peak - 0.3, "seconds": 1.0}
        for name, peak in peaks.items()
    ]


def _memory_record(n: int, sampler: str, fit_peak: float) -> dict:
    return {
        "n_nodes": n,
        "sampler": sampler,
        "n_entries": 10 * n,
        "floor_gib": 1.0,
        "baseline_gib": 0.3,
        "stages": _stages({"generate": 9.0, "Graph": 1.5, "set-up": fit_peak, "predict": 1.2}),
        "fit_s": 10.0,
        "test_accuracy": 0.5,
        "torch": "2.0",
    }


def test_a_stage_records_what_it_allocated_above_its_start():
    stages = memory_stages.Stages()
    stages.begin("small")
    stages.begin("big")
    held = np.ones(50 * 2**20)  # 400 MB, touched
    time.sleep(0.1)  # sampled while it is held
    del held
    stages.begin("after")
    stages.begin(None)
    small, big, after = stages.stages
    assert (small["stage"], big["stage"]) == ("small", "big")
    assert big["above_gib"] > 0.3 > small["above_gib"]
    assert big["peak_gib"] >= big["above_gib"]
    # the sampled anonymous peak sees the array, and the next stage starts from its own
    # start; the file-backed pages do not grow with it
    assert big["anon_gib"] - small["anon_gib"] > 0.3
    assert big["anon_gib"] - after["anon_gib"] > 0.3
    assert abs(big["file_gib"] - small["file_gib"]) < 0.1


def test_features_on_disk_are_a_map_of_the_same_values(tmp_path):
    X = np.arange(3 * 2**20, dtype=np.float32).reshape(-1, 64)  # 12 MiB
    mapped = memory_stages.features_on_disk(X, str(tmp_path))
    assert isinstance(mapped, np.memmap) and mapped.dtype == np.float32
    np.testing.assert_array_equal(mapped, X)
    assert (tmp_path / "X.npy").stat().st_size >= X.nbytes


def _mapped(array: np.ndarray) -> bool:
    """Whether the array's memory is a mapped file's."""
    import mmap

    while array is not None:
        if isinstance(array, np.memmap | mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


@pytest.mark.parametrize("block, long_range", [(1 << 20, 0.0), (4096, 0.0), (4096, 0.2)])
def test_the_local_graph_is_a_symmetric_csbm_with_short_edges(tmp_path, block, long_range):
    import scipy.sparse as sp

    n, window = 20_000, 1000
    data = local_csbm.write_local_csbm(
        str(tmp_path), n, window=window, long_range=long_range, block=block, seed=3
    )
    A, X, y, split = data["A"], data["X"], data["y"], data["split"]
    # every array is a map of the folder's files, none a copy in memory
    for array in (A.data, A.indices, A.indptr, X, y, split):
        assert _mapped(array)
    assert A.indices.dtype == A.indptr.dtype == np.int32 and A.data.dtype == np.float32
    B = sp.csr_array(A)
    assert B.has_canonical_format and np.all(B.data == 1)
    assert (B != B.T).nnz == 0 and B.diagonal().sum() == 0
    assert 9.0 < B.nnz / n <= 10.0  # degree 10, less the merged repeats
    rows = np.repeat(np.arange(n), np.diff(B.indptr))
    y = np.asarray(y)
    assert np.array_equal(y, np.arange(n) % 5)
    assert abs(np.mean(y[rows] == y[B.indices]) - 0.8) < 0.01
    short = np.mean(np.abs(rows - B.indices) <= window)
    assert short == 1.0 if long_range == 0 else abs(short - (1 - long_range)) < 0.02
    # features: the class means (unit norm) plus unit noise; a 60/20/20 split
    X = np.asarray(X)
    means = np.stack([X[y == c].mean(0) for c in range(5)])
    assert np.allclose(np.linalg.norm(means, axis=1), 1.0, atol=0.1)
    assert abs(float((X - means[y]).std()) - 1.0) < 0.01
    assert np.allclose(np.bincount(np.asarray(split)) / n, [0.6, 0.2, 0.2], atol=0.02)


def test_the_local_graph_is_the_same_graph_from_the_same_seed(tmp_path):
    first = local_csbm.write_local_csbm(str(tmp_path / "a"), 5000, block=2048, long_range=0.1)
    again = local_csbm.write_local_csbm(str(tmp_path / "b"), 5000, block=2048, long_range=0.1)
    other = local_csbm.write_local_csbm(str(tmp_path / "c"), 5000, block=2048, seed=1)
    assert (first["A"] != again["A"]).nnz == 0 and np.array_equal(first["X"], again["X"])
    assert (first["A"] != other["A"]).nnz > 0


def test_memory_bar_reads_the_fit_peak_at_the_largest_size(tmp_path):
    records = [
        _memory_record(1000, "random", 3.0),  # smaller graph: not the bar's
        _memory_record(10_000, "random", 1.9),
        _memory_record(10_000, "cluster", 2.4),  # generation peaks far higher: not counted
    ]
    region = memory_stages.render(
        {**META, "command": "python benchmarks/memory_stages.py"}, records, None
    )
    assert "random 1.90x: **PASS**" in region and "cluster 2.40x: **FAIL**" in region
    assert "at n = 10,000" in region
    assert "3.0" not in region.split("**Bar")[1]
    assert region.count("\n| 1") == 3  # one row per record


def test_runs_of_other_backbones_are_rows_and_verdicts_of_their_own():
    records = [
        _memory_record(10_000, "random", 1.9),
        {**_memory_record(10_000, "random", 2.2), "backbone": "gat"},
    ]
    region = memory_stages.render(
        {**META, "command": "python benchmarks/memory_stages.py"}, records, None
    )
    rows = [line for line in region.splitlines() if line.startswith("| 10,000 |")]
    assert [row.split(" | ")[2] for row in rows] == ["random", "random gat"]
    assert "random 1.90x: **PASS**; random gat 2.20x: **FAIL**" in region
    specs = memory_stages.make_specs(
        memory_stages.parse_args(["--samplers", "random", "--backbones", "gcn", "gat"])
    )
    assert [s.get("backbone", "gcn") for s in specs] == ["gcn", "gat"]
    assert "backbone" not in specs[0]  # gcn's records stay as they were


def _disk_record(n: int, sampler: str, fit_anon: float) -> dict:
    record = _memory_record(n, sampler, 2.0)
    for stage in record["stages"]:
        stage["anon_gib"] = fit_anon if stage["stage"] == "set-up" else 0.5
        stage["file_gib"] = 0.2
    return {**record, "features": "disk", "adjacency_gib": 0.25, "baseline_anon_gib": 0.2}


def test_runs_with_features_on_disk_get_their_own_table_and_projection():
    records = [
        _memory_record(10_000, "random", 1.9),
        _disk_record(10**6, "random", 1.0),
        _disk_record(10**7, "random", 4.0),
        _disk_record(10**7, "cluster-lp", 5.0),  # one size only: no projection
    ]
    region = memory_stages.render(
        {**META, "command": "python benchmarks/memory_stages.py"}, records, None
    )
    in_memory, on_disk = region.split("**Features memory-mapped from disk**")
    assert "random 1.90x: **PASS**" in in_memory and "10,000,000" not in in_memory
    rows = [line for line in on_disk.splitlines() if line.startswith("| 1")]
    assert len(rows) == 3
    # anonymous peak 4.00 GiB, 16.00x the 0.25 GiB adjacency; 0.75 GiB of features on disk
    assert "| 10,000,000 | 100,000,000 | random | 0.75 | 0.25 |" in on_disk
    assert "| 4.00 | 16.00 |" in on_disk
    # (4 - 1) GiB per 9e6 nodes, 9e7 nodes further: 4 + 30 GiB
    assert "(random, linear" in on_disk and ": 34.0 GiB" in on_disk
    assert "(cluster-lp, linear" not in on_disk
    assert memory_stages.projection([_disk_record(10**6, "random", 1.0)]) is None


def test_runs_on_the_local_graph_get_their_own_table_and_the_moonshot_bar():
    local = {"graph": "local", "long_range": 0.0, "batch_size": 1024}
    records = [
        _disk_record(10**7, "random", 4.0),
        {**_disk_record(10**7, "cluster-lp", 3.0), **local},
        {**_disk_record(10**8, "cluster-lp", 20.0), **local},
    ]
    meta = {**META, "command": "python benchmarks/memory_stages.py", "memory_gib": 23.5}
    region = memory_stages.render(meta, records, None)
    disk, local_part = region.split("**Graph and features on disk, node ids in local order**")
    # the local runs are neither in the table of make_csbm's graphs nor in its projection
    assert "| 100,000,000 | 1,000,000,000 |" not in disk and "(cluster-lp, linear" not in disk
    rows = [line for line in local_part.splitlines() if line.startswith("| 1")]
    assert len(rows) == 2
    assert "| 100,000,000 | 1,000,000,000 | cluster-lp | 1,024 | 0 | 0.75 |" in rows[1]
    assert "**Moonshot: 100,000,000 nodes" in local_part and "peak 20.00 GiB" in local_part
    assert "**PASS**" in local_part
    over = {**_disk_record(10**8, "cluster-lp", 24.0), **local}
    assert "**FAIL**" in memory_stages.render(meta, [over], None)


def _floor_record(vq: float, full: float, pyg: float) -> dict:
    spec = {"n_nodes": 10_000, "n_features": 64, "batch_size": 1024, "n_codewords": 256}
    rates = {"sgemm": 1e11, "spmm": 5e9, "amin": 5e9, "copy": 5e9}
    return {
        **spec,
        "n_entries": 110_000,
        "median_s": {"vq": vq, "full": full, "pyg": pyg},
        "rates": rates,
        "floor_s": epoch_floor.floors(spec, 110_000, rates),
        "torch": "2.0",
    }


def test_the_floor_adds_its_parts_and_grows_with_the_work():
    spec = {"n_nodes": 10_000, "n_features": 64, "n_codewords": 256}
    rates = {"sgemm": 1e11, "spmm": 5e9, "amin": 5e9, "copy": 5e9}
    one = epoch_floor.floors(spec, 110_000, rates)
    assert one["vq"] == pytest.approx(sum(one["parts"].values()))
    assert one["full"] == pytest.approx(
        one["parts"]["dense layers"] + one["parts"]["message passing"]
    )
    two = epoch_floor.floors({**spec, "n_nodes": 20_000}, 220_000, rates)
    assert two["vq"] == pytest.approx(2 * one["vq"])
    # two searches of n rows, h / 4 slices, k codewords at the amin rate
    assert one["parts"]["search minimum"] == pytest.approx(2 * 10_000 * 16 * 256 / 5e9)
    faster = epoch_floor.floors(spec, 110_000, {**rates, "amin": 1e10})
    assert faster["parts"]["search minimum"] == pytest.approx(one["parts"]["search minimum"] / 2)


def test_the_floor_counts_every_quantised_layer():
    spec = {"n_nodes": 10_000, "n_features": 64, "n_codewords": 256}
    rates = {"sgemm": 1e11, "spmm": 5e9, "amin": 5e9, "copy": 5e9}
    one = epoch_floor.floors(spec, 110_000, rates)["parts"]
    three = epoch_floor.floors(spec, 110_000, rates, depth=3)["parts"]
    for part in ("search products", "search minimum", "moving averages"):
        assert three[part] == pytest.approx(3 * one[part])  # one quantised layer each
    # two more convolutions of width 64, forward and backward; two more 64 x 64 layers
    assert three["message passing"] - one["message passing"] == pytest.approx(
        2 * 110_000 * 2 * 64 * 2 / 5e9
    )
    assert three["dense layers"] - one["dense layers"] == pytest.approx(
        6 * 10_000 * 2 * 64 * 64 / 1e11
    )
    assert one["dense layers"] == pytest.approx(6 * 10_000 * (64 * 64 + 64 * 5) / 1e11)


def test_epoch_bars_compare_the_vq_epoch_with_its_floor_and_both_references():
    record = _floor_record(vq=1.0, full=0.8, pyg=1.2)
    region = epoch_floor.render(META, [record], None)
    assert "faster than PyG's full graph**: 0.83x, **PASS**" in region
    assert "the full-graph epoch**: 1.25x, **PASS**" in region
    ratio = 1.0 / record["floor_s"]["vq"]
    assert f"its floor**: {ratio:.2f}x, **{'PASS' if ratio <= 4 else 'FAIL'}**" in region
    slow = epoch_floor.render(META, [_floor_record(vq=3.0, full=1.0, pyg=1.5)], None)
    assert "2.00x, **FAIL**" in slow and "3.00x, **FAIL**" in slow
    assert "inference" not in region  # records without predict times have no such bar


def test_inference_bar_compares_vq_with_exact_predict():
    record = {**_floor_record(vq=1.0, full=0.8, pyg=1.2), "predict_s": {"vq": 0.3, "exact": 0.1}}
    region = epoch_floor.render(META, [record], None)
    assert "VQ inference 0.300 s, exact inference 0.100 s" in region
    assert "as fast as exact inference**: 3.00x, **FAIL**" in region
    record["predict_s"] = {"vq": 0.1, "exact": 0.12}
    assert "0.83x, **PASS**" in epoch_floor.render(META, [record], None)


def test_saved_records_rebuild_the_region(tmp_path):
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps({"meta": META, "runs": [_floor_record(1.0, 0.8, 1.2)]}))
    page = tmp_path / "page.md"
    epoch_floor.main(["--from-json", str(saved), "--out", str(page)])
    assert "| 10,000 | 110,000 |" in page.read_text()


def test_other_backbones_get_their_own_rows_beside_gcn():
    record = {
        **_floor_record(vq=1.0, full=0.5, pyg=1.2),
        "backbones": {"sage": {"vq": 1.2, "full": 0.4}, "gat": {"vq": 2.0, "full": 1.0}},
    }
    region = epoch_floor.render(META, [record], None)
    assert "| gcn | 1.000 | 0.500 | 2.00 |" in region
    assert "| sage | 1.200 | 0.400 | 3.00 |" in region
    assert "| gat | 2.000 | 1.000 | 2.00 |" in region
    assert "| backbone |" not in epoch_floor.render(META, [_floor_record(1.0, 0.5, 1.2)], None)


def test_a_backbone_without_a_full_graph_epoch_says_why():
    record = {
        **_floor_record(vq=1.0, full=0.5, pyg=1.2),
        "backbones": {"transformer": {"vq": 5.0, "full": None}, "gin": {"vq": 1.5, "full": 0.5}},
    }
    region = epoch_floor.render(META, [record], None)
    assert "| transformer | 5.000 | — | — |" in region
    assert "| gin | 1.500 | 0.500 | 3.00 |" in region
    assert "No full-graph epoch for transformer: its global attention" in region
    assert "No full-graph epoch for gin" not in region


def test_deeper_networks_get_rows_against_their_own_floors():
    record = _floor_record(vq=1.0, full=0.5, pyg=1.2)
    record["depths"] = {"2": {"vq": 2.0, "full": 0.8, "floor_vq": 0.5, "floor_full": 0.2}}
    region = epoch_floor.render(META, [record], None)
    assert "| 2 | 2.000 | 0.500 | 4.0 | 0.800 | 0.200 | 2.50 |" in region
    floor = record["floor_s"]
    assert f"| 1 | 1.000 | {floor['vq']:.3f} | {1.0 / floor['vq']:.1f} | 0.500 |" in region
    assert "| hidden layers |" not in epoch_floor.render(META, [_floor_record(1, 0.5, 1.2)], None)
