"""Depth and density benchmark of ``VQGNNClassifier``: VQ against full-graph training at 1-3 hidden
layers, both samplers, real graphs and dense synthetic ones.

Every (dataset, backbone, hidden sizes, sampler, mode, seed) is one fit at the estimator's
defaults (GAT with its paper's recipe), VQ at ``batch_size = n_nodes // 8`` or full graph
(``batch_size=None``, the reference, which has no sampler). Datasets: cora, citeseer and
twitch-en from ``../shared/data``, and contextual SBM graphs ``csbm-d<degree>-h<homophily>``
(3000 nodes, 5 classes, 64 features, feature noise 1.5, seed 0). Fits run ``--jobs`` at a time,
each in its own process with one thread; only accuracies and fit times are recorded (memory is
``node_classification.py``'s job). Records go to ``--json``; ``--from-json`` rebuilds the page
without fitting. The commands, bars and tables replace the generated region of ``--out`` (by
default ``doc/benchmarks/depth.md``, whose hand-written rest says what is measured and how).

    python benchmarks/depth.py --json doc/benchmarks_depth.json
    python benchmarks/depth.py --from-json doc/benchmarks_depth.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_DATA_DIR,
    OUT_HELP,
    load_dataset,
    mean_std,
    page_for,
    portable,
    write_generated,
)

RECIPES = {"gat": {"dropout": 0.6, "attention_dropout": 0.6, "learning_rate": 0.005}}
# how far VQ may trail full graph, in points: 1 for every backbone, 1.5 for GAT
BAR_POINTS = {"gat": 1.5}
COLLAPSE = 0.05  # a run more than this below its full-graph mean counts as collapsed
CSBM = re.compile(r"csbm-d(\d+)-h([0-9.]+)$")
REAL = ("cora", "citeseer", "twitch-en")
DENSE = ("csbm-d50-h0.2", "csbm-d50-h0.8", "csbm-d100-h0.2", "csbm-d100-h0.8")
BOTH = ("cluster", "random")
# the default grid: (datasets, backbones, hidden sizes, samplers); one hidden layer (the
# estimator's default network) and dense graphs at the default sampler only
GRID = [
    (REAL, ("gcn", "sage", "gin", "gat", "transformer"), (64,), ("cluster",)),
    (REAL, ("gcn", "sage", "gin", "transformer"), (64, 64), BOTH),
    (REAL, ("gat",), (32, 32), BOTH),
    (REAL, ("gcn", "sage"), (64, 64, 64), BOTH),
    (DENSE, ("gcn", "sage"), (64,), ("cluster",)),
    (DENSE, ("gcn", "sage"), (64, 64), ("cluster",)),
]


def _load(dataset: str, data_dir: Path):
    found = CSBM.match(dataset)
    if found is None:
        return load_dataset(dataset, data_dir)
    from skvqgnn.datasets import make_csbm

    return make_csbm(
        3000,
        n_classes=5,
        avg_degree=float(found.group(1)),
        homophily=float(found.group(2)),
        n_features=64,
        feature_noise=1.5,
        random_state=0,
    )


def run_fit(spec: dict) -> dict:
    """One fit, in a worker process: the spec plus test accuracy, fit time and epochs."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import numpy as np
    import torch

    from skvqgnn import VQGNNClassifier
    from skvqgnn.datasets import random_split

    torch.set_num_threads(1)
    A, X, y, split = _load(spec["dataset"], Path(spec["data_dir"]))
    if split is None:
        split = random_split(y, 0.6, 0.2, random_state=spec["seed"])
    params = dict(RECIPES.get(spec["backbone"], {}))
    if spec["max_epochs"] is not None:
        params["max_epochs"] = spec["max_epochs"]
    clf = VQGNNClassifier(
        backbone=spec["backbone"],
        hidden_layer_sizes=tuple(spec["hidden"]),
        batch_size=None if spec["mode"] == "full" else A.shape[0] // 8,
        sampler=spec["sampler"] or "cluster",
        random_state=spec["seed"],
        device="cpu",
        **params,
    )
    t0 = time.perf_counter()
    clf.fit(A, X, np.where(split.train_mask, y, -1))
    fit_time = time.perf_counter() - t0
    pred = clf.transduction_
    return {
        **spec,
        "n_nodes": int(A.shape[0]),
        "avg_degree": float(A.nnz / A.shape[0]),
        "test_acc": float(np.mean(pred[split.test_mask] == y[split.test_mask])),
        "fit_time": fit_time,
        "epochs": clf.n_iter_,
    }


def _key(spec: dict) -> tuple:
    return tuple(
        spec[k] if k != "hidden" else tuple(spec[k])
        for k in ("dataset", "backbone", "hidden", "mode", "sampler", "seed", "max_epochs")
    )


def specs(args) -> list[dict]:
    out = []
    for datasets, backbones, hidden, samplers in GRID:
        for dataset in datasets:
            if args.datasets and dataset not in args.datasets:
                continue
            for backbone in backbones:
                if args.backbones and backbone not in args.backbones:
                    continue
                if args.depths and len(hidden) not in args.depths:
                    continue
                for mode, sampler in (("full", None), *(("vq", s) for s in samplers)):
                    for seed in args.seeds:
                        out.append(
                            {
                                "dataset": dataset,
                                "backbone": backbone,
                                "hidden": list(hidden),
                                "mode": mode,
                                "sampler": sampler,
                                "seed": seed,
                                "max_epochs": args.max_epochs,
                                "data_dir": str(args.data_dir),
                            }
                        )
    return out


def _acc(runs: list[dict]) -> str:
    """Mean ± standard deviation of the runs' test accuracy; the value alone for one run."""
    values = [r["test_acc"] for r in runs]
    return f"{values[0]:.3f}" if len(values) == 1 else mean_std(values)


def render(records: list[dict], commands: list[str], regenerated: str | None = None) -> str:
    """The page's generated region: the ``commands`` that made the records (and the one that
    ``regenerated`` the page from them, if any), the seeds, the summary of the bars, then one
    table per dataset."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        key = (r["dataset"], r["backbone"], tuple(r["hidden"]), r["mode"], r["sampler"])
        groups.setdefault(key, []).append(r)
    rows, passed, failed, collapsed = {}, 0, [], []
    for (dataset, backbone, hidden, mode, sampler), runs in groups.items():
        if mode == "full":
            continue
        full = groups.get((dataset, backbone, hidden, "full", None))
        acc = statistics.mean(r["test_acc"] for r in runs)
        ref = None if full is None else statistics.mean(r["test_acc"] for r in full)
        delta = None if ref is None else 100 * (acc - ref)
        allowed = BAR_POINTS.get(backbone, 1.0)
        name = f"{dataset} / {backbone} {list(hidden)} / {sampler}"
        if delta is not None:
            if delta >= -allowed:
                passed += 1
            else:
                failed.append(f"{name} ({delta:+.1f})")
            if any(r["test_acc"] < ref - COLLAPSE for r in runs):
                collapsed.append(name)
        rows.setdefault(dataset, []).append((backbone, hidden, sampler, runs, full, delta, allowed))
    seeds = sorted({r["seed"] for r in records})
    deltas = [d for table in rows.values() for *_, d, _ in table if d is not None]
    lines = ["Produced by", "", "```", *commands, "```", ""]
    if regenerated:
        lines += [f"(regenerated from the saved records with `{regenerated}`)", ""]
    lines += [
        f"- Seeds: {', '.join(map(str, seeds))}",
        f"- Bar (VQ ≥ full − 1 point; gat − 1.5): **{passed} of {passed + len(failed)} rows "
        "pass**" + ("." if not failed else "; below it: " + ", ".join(failed) + "."),
        f"- Collapsed runs (a seed more than {100 * COLLAPSE:.0f} points below full graph): "
        + (", ".join(collapsed) if collapsed else "none")
        + ".",
        f"- Mean Δ over all rows: {statistics.mean(deltas):+.2f} points."
        if deltas
        else "- Mean Δ: n/a.",
        "",
    ]
    for dataset, table in rows.items():
        n = table[0][3][0]["n_nodes"]
        degree = table[0][3][0]["avg_degree"]
        lines += [
            f"### {dataset} ({n} nodes, average degree {degree:.1f})",
            "",
            "| backbone | hidden | sampler | VQ test acc | full test acc | Δ (points) "
            "| VQ fit s | full fit s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for backbone, hidden, sampler, runs, full, delta, allowed in table:
            ref = "–" if full is None else _acc(full)
            cell = "n/a" if delta is None else f"{delta:+.1f}"
            if delta is not None and delta < -allowed:
                cell = f"**{cell}**"
            t_full = (
                "–" if full is None else f"{statistics.median(r['fit_time'] for r in full):.0f}"
            )
            lines.append(
                f"| {backbone} | {'×'.join(map(str, hidden))} | {sampler} "
                f"| {_acc(runs)} | {ref} | {cell} "
                f"| {statistics.median(r['fit_time'] for r in runs):.0f} | {t_full} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+")
    parser.add_argument("--backbones", nargs="+")
    parser.add_argument("--depths", nargs="+", type=int, help="numbers of hidden layers")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=page_for(__file__), help=OUT_HELP)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--from-json", type=Path, nargs="+")
    parser.add_argument(
        "--resume", type=Path, help="keep this file's records and fit only the specs it lacks"
    )
    args = parser.parse_args(argv)
    command = shlex.join(["python", "benchmarks/depth.py", *(argv or sys.argv[1:])])
    regenerated = None
    if args.from_json:
        records = [r for path in args.from_json for r in json.loads(path.read_text())]
        regenerated = command
    else:
        records = json.loads(args.resume.read_text()) if args.resume else []
        done = {_key(r) for r in records}
        todo = [{**spec, "command": command} for spec in specs(args) if _key(spec) not in done]
        # the full-graph transformer is O(n²) in time and memory: it runs last
        todo.sort(key=lambda s: s["backbone"] == "transformer" and s["mode"] == "full")
        with ProcessPoolExecutor(args.jobs) as pool:
            for record in pool.map(run_fit, todo):
                records.append(record)
                print(
                    f"{record['dataset']} {record['backbone']} {record['hidden']} "
                    f"{record['mode']} {record['sampler']} seed {record['seed']}: "
                    f"{record['test_acc']:.3f} ({record['fit_time']:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                if args.json:
                    args.json.write_text(json.dumps(portable(records), indent=1))
    commands = sorted({r["command"] for r in records})
    write_generated(args.out, render(records, commands, regenerated))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
