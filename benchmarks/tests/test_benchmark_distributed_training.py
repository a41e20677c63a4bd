"""The data-parallel benchmark (``distributed_training.py``): its generated region rebuilt from
records (no process group)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import distributed_training as distributed  # noqa: E402
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
    # seed by seed: +0.5 and 0.0 points, mean +0.25, standard error 0.354 / √2
    assert (
        "| cora | data-parallel | 2 | gloo ranks | 2 | 0.8125 ± 0.0106 | +0.25 ± 0.25 |" in region
    )
    assert "cora, 2 ranks (gloo ranks) within 0.5 point of 1 rank**: **PASS**" in region
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


def _partitioned(world, n=10**6, falls=True):
    """A partitioned run: each rank holds 600 bytes per node of its 1/N (or, ``falls=False``, of
    the whole graph), 64 bytes per node of codes, and 100 MiB + 17 bytes per node above those."""
    traffic = {"all_reduce": 100 * 1024 * 100, "all_gather": 50 * 1024 * 100, "broadcast": 0}
    graph, table = 600 * n // (world if falls else 1), 64 * n
    rest = 100 * 2**20 + 17 * n
    ranks = []
    for r in range(world):
        rank = _rank(r, 4.0 / world, 0.9, traffic if world > 1 else {})
        rank.update(
            rss_start_mib=400.0,
            rss_peak_mib=400.0 + (rest + graph + table) / 2**20,
            graph_bytes=graph,
            table_bytes=table,
            nodes_held=n // world,
        )
        ranks.append(rank)
    return {
        "kind": "partitioned",
        "n_nodes": n,
        "world_size": world,
        "batch_size": 1024,
        "max_epochs": 2,
        "ranks": ranks,
        "torch": "2.0",
    }


def test_partitioned_runs_report_per_rank_memory_beside_data_parallel():
    records = [_scale(1), _scale(2), _partitioned(1), _partitioned(2), _partitioned(2, 10**5)]
    region = distributed.render(META, records, None)
    # 300e6 bytes of graph (286 MiB) and 64e6 of codes (61 MiB) per rank; peak 863 MiB, 463
    # above the start; the data-parallel rank of the same graph peaked at 1501 MiB
    assert (
        "| 1e+06 | 2 | 500,000 | 286 | 61 | 863 (463) | 1501 | 2.00 | 20.0 | 100 | 50 |" in region
    )
    assert (
        "2 ranks: the graph a rank holds is 1/N of the whole within 10 % (1.000 x 1/N)**: **PASS**"
        in region
    )
    # 10⁹ nodes on 64 ranks: 600/64 + 64 + 17 bytes per node + 100 MiB = 84.3 GiB per rank
    assert "grew by 17 bytes per node" in region and "over 100 MiB that do not grow" in region
    assert "| 1e+09 | 64 | 15,259 | 2.2 GiB | 339 GiB | 84.3 GiB |" in region
    bad = distributed.render(META, [_partitioned(1), _partitioned(2, falls=False)], None)
    assert "(2.000 x 1/N)**: **FAIL**" in bad


def test_partitioned_accuracy_may_gain_but_not_lose():
    base = [_accuracy(1, 0, 0.80)]
    gain = distributed.render(META, [*base, {**_accuracy(2, 0, 0.81), "mode": "partitioned"}], None)
    assert "| cora | partitioned | 2 | gloo ranks | 1 | 0.8100 ± 0.0000 | +1.00 ± 0.00 |" in gain
    assert (
        "2 partitioned ranks (gloo ranks) not more than 0.5 point below 1 rank**: **PASS**" in gain
    )
    loss = distributed.render(META, [*base, {**_accuracy(2, 0, 0.79), "mode": "partitioned"}], None)
    assert (
        "2 partitioned ranks (gloo ranks) not more than 0.5 point below 1 rank**: **FAIL**" in loss
    )


def test_accuracy_is_compared_seed_by_seed_with_one_rank_run_the_same_way():
    """Runs in one process (``Simulated``) are compared with one rank in one process, seed by
    seed: only the seeds both have count, so a seed's luck is not read as the ranks' effect.
    Where a configuration ran both ways, the way with more seeds is checked."""
    one = lambda world, seed, acc: {**_accuracy(world, seed, acc), "one_process": True}  # noqa: E731
    records = [
        _accuracy(1, 0, 0.70),  # gloo: not the base of the one-process runs
        _accuracy(2, 0, 0.70),  # gloo, one seed: shown, not checked
        one(1, 0, 0.80),
        one(1, 1, 0.90),
        one(1, 2, 0.60),  # no 2-rank run of seed 2: left out of the pairs
        one(2, 0, 0.79),
        one(2, 1, 0.89),
    ]
    region = distributed.render(META, records, None)
    # pairs -1 and -1: -1.00 ± 0.00, although the means differ by 0.8400 - 0.7667 = +7.3 points
    assert (
        "| cora | data-parallel | 2 | one process | 2 | 0.8400 ± 0.0707 | -1.00 ± 0.00 |" in region
    )
    assert "| cora | data-parallel | 1 | one process | 3 | 0.7667 ± 0.1528 |  |" in region
    assert "cora, 2 ranks (one process) within 0.5 point of 1 rank**: **FAIL**" in region
    assert (
        "| cora | data-parallel | 2 | gloo ranks | 1 | 0.7000 ± 0.0000 | +0.00 ± 0.00 |" in region
    )
    assert "(gloo ranks) within" not in region
