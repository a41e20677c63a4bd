"""The data-parallel benchmark (``distributed.py``): its generated region rebuilt from records
(no process group)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import distributed  # noqa: E402
from test_benchmark_link import META  # noqa: E402


def _rank(rank, epoch_s, acc, traffic):
    return {
        "rank": rank,
        "fit_s": 10.0 * epoch_s,
        "epoch_s": epoch_s,
        "epochs": 2,
        "rss_loaded_mib": 1000.0,
        "rss_peak_mib": 1500.0 + rank,
        "traffic": traffic,
        "n_batches": 100,
        "test_acc": acc,
        "graph_bytes": 300 * 10**6,
        "table_bytes": 64 * 10**6,
        "torch": "2.0",
    }


def _scale(world):
    traffic = {"all_reduce": 100 * 1024 * 100, "all_gather": 50 * 1024 * 100, "broadcast": 0}
    ranks = [_rank(r, 4.0 / world + r, 0.9, traffic if world > 1 else {}) for r in range(world)]
    return {
        "kind": "scale",
        "n_nodes": 10**6,
        "world_size": world,
        "batch_size": 1024,
        "max_epochs": 2,
        "ranks": ranks,
        "torch": "2.0",
    }


def _accuracy(world, seed, acc):
    return {
        "kind": "accuracy",
        "dataset": "cora",
        "data_dir": "../shared/data",
        "world_size": world,
        "seed": seed,
        "ranks": [_rank(r, 1.0, acc, {}) for r in range(world)],
        "torch": "2.0",
    }


def test_the_region_reports_time_memory_traffic_and_accuracy():
    records = [
        _scale(1),
        _scale(2),
        _accuracy(1, 0, 0.80),
        _accuracy(1, 1, 0.82),
        _accuracy(2, 0, 0.805),
        _accuracy(2, 1, 0.82),
    ]
    region = distributed.render(META, records, None)
    # 2 ranks: the slowest rank's epoch (2 + 1 s), 100 steps (2 epochs × 50), KiB per step
    assert "| 1e+06 | 2 | 3.00 | 30.0 | 1501 | 501 | 100 | 50 | 0.900 |" in region
    assert "| cora | 2 | 2 | 0.8125 ± 0.0106 | +0.25 |" in region
    assert "cora, 2 ranks within 0.5 point of 1 rank**: **PASS**" in region
    # 10⁹ nodes on 64 ranks: 300 + 64 bytes per node, plus the 500 MiB measured above the graph
    assert "| 1e+09 | 64 | 15,259 | 2.2 GiB | 339 GiB | 64.5 GiB |" in region
    bad = distributed.render(META, [_accuracy(1, 0, 0.80), _accuracy(2, 0, 0.79)], None)
    assert "within 0.5 point of 1 rank**: **FAIL**" in bad


def test_saved_records_rebuild_the_region(tmp_path):
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps({"meta": META, "runs": [_scale(1), _scale(2)]}))
    page = tmp_path / "page.md"
    distributed.main(["--from-json", str(saved), "--out", str(page)])
    assert "| 1e+06 | 1 | 4.00 |" in page.read_text()
