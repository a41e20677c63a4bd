"""The depth benchmark's grid, one real fit through its worker, and the bars of its page's
generated region."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import depth  # noqa: E402


def _args(**kw):
    base = dict(datasets=None, backbones=None, depths=None, seeds=[0], max_epochs=None)
    return SimpleNamespace(**{**base, **kw, "data_dir": Path("data")})


def test_the_grid_has_every_backbone_at_two_layers_both_samplers_and_dense_graphs():
    specs = depth.specs(_args())
    two = {(s["dataset"], s["backbone"], s["sampler"]) for s in specs if len(s["hidden"]) == 2}
    for dataset in depth.REAL:
        for backbone in ("gcn", "sage", "gin", "gat", "transformer"):
            assert {(dataset, backbone, None), (dataset, backbone, "cluster")} <= two
            assert (dataset, backbone, "random") in two
    three = {(s["dataset"], s["backbone"]) for s in specs if len(s["hidden"]) == 3}
    assert three == {(d, b) for d in depth.REAL for b in ("gcn", "sage")}
    one = {(s["dataset"], s["backbone"], s["sampler"]) for s in specs if s["hidden"] == [64]}
    assert ("cora", "gat", "cluster") in one and ("twitch-en", "transformer", None) in one
    dense = [s for s in specs if s["dataset"] in depth.DENSE]
    assert {len(s["hidden"]) for s in dense} == {1, 2}
    assert {s["sampler"] for s in dense} == {None, "cluster"}
    only = depth.specs(_args(datasets=["cora"], backbones=["gcn"], depths=[3]))
    assert {(s["dataset"], s["backbone"], len(s["hidden"])) for s in only} == {("cora", "gcn", 3)}


def test_a_dense_csbm_fit_runs_through_the_worker():
    spec = {
        "dataset": "csbm-d50-h0.8",
        "backbone": "gcn",
        "hidden": [8],
        "mode": "vq",
        "sampler": "cluster",
        "seed": 0,
        "max_epochs": 2,
        "data_dir": "unused",
        "command": "c",
    }
    record = depth.run_fit(spec)
    assert record["n_nodes"] == 3000 and 45 < record["avg_degree"] <= 50
    assert 0 <= record["test_acc"] <= 1 and record["epochs"] == 2


def _record(backbone, mode, sampler, acc, seed=0):
    return {
        "dataset": "cora",
        "backbone": backbone,
        "hidden": [64, 64],
        "mode": mode,
        "sampler": sampler,
        "seed": seed,
        "test_acc": acc,
        "fit_time": 1.0,
        "n_nodes": 2708,
        "avg_degree": 3.9,
        "command": "python benchmarks/depth.py",
    }


def test_the_region_checks_the_bars_and_names_collapsed_runs():
    records = [
        _record("gcn", "full", None, 0.80),
        _record("gcn", "vq", "cluster", 0.795),  # -0.5: passes
        _record("gcn", "vq", "random", 0.70),  # -10: fails and collapsed
        _record("gat", "full", None, 0.78),
        _record("gat", "vq", "cluster", 0.768),  # -1.2: passes GAT's 1.5 bar
        _record("gat", "vq", "random", 0.760),  # -2.0: fails
    ]
    region = depth.render(records, ["python benchmarks/depth.py --seeds 0"], "python regen")
    assert region.startswith(
        "Produced by\n\n```\npython benchmarks/depth.py --seeds 0\n```\n\n"
        "(regenerated from the saved records with `python regen`)\n\n- Seeds: 0\n"
    )
    assert "**2 of 4 rows pass**" in region
    assert "cora / gcn [64, 64] / random (-10.0)" in region
    assert "cora / gat [64, 64] / random (-2.0)" in region
    collapsed = next(line for line in region.splitlines() if line.startswith("- Collapsed"))
    assert "cora / gcn [64, 64] / random" in collapsed and "gat" not in collapsed
    assert "| gcn | 64×64 | cluster | 0.795 | 0.800 | -0.5 |" in region
    assert "**-10.0**" in region
    assert "(regenerated" not in depth.render(records, ["python benchmarks/depth.py"])


def test_saved_records_name_the_data_folder_relative_to_the_repository():
    from _common import REPO_ROOT, portable

    record = {"dataset": "cora", "data_dir": str(REPO_ROOT.parent / "shared" / "data")}
    assert portable([record]) == [{"dataset": "cora", "data_dir": "../shared/data"}]
    assert portable([{"dataset": "cora"}]) == [{"dataset": "cora"}]
