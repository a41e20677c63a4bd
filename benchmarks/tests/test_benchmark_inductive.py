"""The inductive benchmark's protocol (hold-out, training graph) and the generated region of its
page (saved records, no fits)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tests.conftest import random_graph

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import inductive  # noqa: E402
from test_benchmark_link import META, PAGE, _cells, _record, _written  # noqa: E402


def test_protocol_holds_out_a_seeded_fifth_independent_of_the_split():
    y = np.arange(1000) % 4
    split, held_out, labels = inductive.protocol(y, 0)
    assert held_out.dtype == bool and held_out.sum() == 200
    again = inductive.protocol(y, 0)
    np.testing.assert_array_equal(again[1], held_out)
    np.testing.assert_array_equal(again[0].test_mask, split.test_mask)
    assert not np.array_equal(inductive.protocol(y, 1)[1], held_out)
    # drawn apart from the split: about a fifth of each split's nodes, not a block of it
    for mask in (split.train_mask, split.val_mask, split.test_mask):
        assert 0.1 < held_out[mask].mean() < 0.3
    # labels: the training split's nodes that are not held out, nothing else
    np.testing.assert_array_equal(labels >= 0, split.train_mask & ~held_out)
    np.testing.assert_array_equal(labels[labels >= 0], y[labels >= 0])


def test_training_graph_drops_the_held_out_nodes_with_their_edges():
    n = 300
    A = random_graph(n, 6, seed=0)
    X = np.arange(n * 2, dtype=np.float32).reshape(n, 2)
    held_out = inductive.hold_out(n, 0.2, seed=3)
    kept, A_kept, X_kept = inductive.training_graph(A, X, held_out)
    assert len(kept) == A_kept.shape[0] == A_kept.shape[1] == len(X_kept) == 240
    np.testing.assert_array_equal(kept, np.flatnonzero(~held_out))
    np.testing.assert_array_equal(X_kept, X[kept])
    # every edge between kept nodes stays, with its weight; none of a held-out node does
    coo = A.tocoo()
    inside = ~held_out[coo.row] & ~held_out[coo.col]
    touching = held_out[coo.row] | held_out[coo.col]
    assert touching.any() and A_kept.nnz == inside.sum()
    kept_coo = A_kept.tocoo()
    rows, cols = kept[kept_coo.row], kept[kept_coo.col]
    assert not (held_out[rows] | held_out[cols]).any()
    np.testing.assert_array_equal(A[rows, cols], kept_coo.data)


def _inductive_record(backbone: str, mode: str, seed: int, vq: float, exact: float | None) -> dict:
    record = {
        **_record(backbone, "vq"),
        "mode": mode,
        "seed": seed,
        "n_graph_nodes": 2708,
        "n_held_out": 542,
        "n_held_out_test": 100 + seed,
        "n_labelled": 1300,
        "n_nodes": 2166 if mode == "inductive" else 2708,
        "batch_size": 270 if mode == "inductive" else 338,
    }
    record["inference"] = {"vq": {"test_acc": vq, "held_out_acc": vq - 0.1, "predict_time_s": 2.0}}
    if exact is not None:
        result = {"test_acc": exact, "held_out_acc": exact - 0.1, "predict_time_s": 1.0}
        record["inference"]["exact"] = result
        record["agreement"] = 0.95 + 0.01 * seed
    return record


def test_inductive_region_from_saved_records(tmp_path):
    runs = [
        _inductive_record("gcn", "inductive", 0, vq=0.70, exact=0.72),
        _inductive_record("gcn", "inductive", 1, vq=0.72, exact=0.72),
        _inductive_record("gcn", "transductive", 0, vq=0.74, exact=None),
        _inductive_record("gcn", "transductive", 1, vq=0.74, exact=None),
        _inductive_record("sage", "inductive", 0, vq=0.60, exact=0.61),
    ]
    saved = tmp_path / "ind.json"
    saved.write_text(json.dumps({"meta": META, "runs": runs}))
    out = tmp_path / "page.md"
    out.write_text(PAGE)
    inductive.main(["--from-json", str(saved), "--out", str(out)])
    written = out.read_text()
    page = _written(written)  # the hand-written rest of the page left alone
    assert page.startswith("Produced on 2026-01-01 00:00 UTC by\n")
    assert "### cora (2708 nodes, 542 held out, 100–101 of them in the test split)" in page
    # held-out test acc, all held-out acc, Δ, agreement, predict time, fit time, nodes, batch
    assert _cells(page, "| gcn | without the held-out nodes | VQ |")[3:11] == [
        "0.710 ± 0.010",
        "0.610 ± 0.010",
        "-3.0",
        "0.955 ± 0.005",
        "2.00",
        "10.0",
        "2166",
        "270",
    ]
    assert _cells(page, "| gcn | without the held-out nodes | exact |")[3:7] == [
        "0.720 ± 0.000",
        "0.620 ± 0.000",
        "-2.0",
        "–",
    ]
    assert _cells(page, "| gcn | whole graph | VQ (`transduction_`) |")[5:7] == ["(reference)", "–"]
    assert _cells(page, "| sage | without the held-out nodes | VQ |")[5] == "n/a"
    assert "| sage | whole graph" not in page

    # a second run rewrites the same region in place
    inductive.main(["--from-json", str(saved), "--out", str(out)])
    assert out.read_text() == written
