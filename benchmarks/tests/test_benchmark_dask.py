"""The Dask grid-search benchmark (``dask_grid_search.py``): its generated region rebuilt from
records (no cluster)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dask_grid_search  # noqa: E402
from test_benchmark_link import META  # noqa: E402


def _record(pickles: int, diff: float) -> dict:
    def run(p, seconds):
        return {"seconds": seconds, "pickles": p, "bytes": p * 2**20, "max_score_diff": diff}

    return {
        "dataset": "cora",
        "n_workers": 2,
        "n_nodes": 2708,
        "graph_bytes": 2**20,
        "tasks": 6,
        "local_s": 10.0,
        "local_scores": [0.8, 0.7],
        "dask": {"sent once": run(pickles, 6.0), "size hidden": run(24, 8.0)},
        "torch": "2.0",
    }


def test_the_region_reports_what_the_client_sent_and_checks_it():
    region = dask_grid_search.render(META, [_record(1, 0.0)], None)
    assert "| cora | 1.00 | 6 | Dask, 2 worker processes | 1 | 1.00 | 6.0 | 0 |" in region
    assert "| Dask, the view's size hidden (reference) | 24 | 24.00 | 8.0 |" in region
    assert "leaves the client once**: **PASS**" in region
    assert "finds the local scores**: **PASS**" in region
    bad = dask_grid_search.render(META, [_record(6, 0.01)], None)
    assert "leaves the client once**: **FAIL**" in bad
    assert "finds the local scores**: **FAIL**" in bad


def test_saved_records_rebuild_the_region(tmp_path):
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps({"meta": META, "runs": [_record(1, 0.0)]}))
    page = tmp_path / "page.md"
    dask_grid_search.main(["--from-json", str(saved), "--out", str(page)])
    assert "| cora | 1.00 | 6 | local, `n_jobs=1` |" in page.read_text()
