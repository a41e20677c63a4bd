"""Grid search on a Dask cluster: the same ``GridSearchCV`` of a ``VQGNNClassifier`` over a
graph's nodes, run in one local process (``n_jobs=1``) and under joblib's Dask backend on a
``LocalCluster`` of worker processes on this machine, in one run.

The graphs: the node benchmark's datasets (``cora``, ``citeseer``) and generated ones
(``csbm-<n>``: ``make_csbm`` with n nodes, average degree 10 and 64 dense features); the search
is over the nodes of the training and validation split, batches of n/8 nodes, ``--n-codewords``
candidates, ``--cv`` folds. The workers run without Dask's default
``MALLOC_TRIM_THRESHOLD_=65536`` (``--malloc-trim`` keeps it), as the how-to recommends.

It measures how often the client pickles the ``Graph`` and how many bytes of arrays that sends,
with the package as it is (the graph's views report their true size, so joblib's Dask backend
sends the graph to the cluster once and every task reuses it) and, as the reference, with the
view's size hidden from Dask (what it did before: the graph pickled into the tasks); the wall
time of each search; and whether the Dask searches find the local scores.

The provenance, table and checks replace the generated region of ``--out`` (by default
``doc/benchmarks/dask_grid_search.md``); raw records go to ``--json``, from which
``--from-json`` rebuilds the region. The parent process imports only the standard library.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from _common import (
    DEFAULT_DATA_DIR,
    OUT_HELP,
    Record,
    load_dataset,
    machine_lines,
    page_for,
    serve,
)

# --------------------------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------------------------


def _count_pickles(graph_cls: Any) -> tuple[list[int], Any]:
    """Record the array bytes of every ``Graph`` this process pickles; returns the list and
    the original ``__getstate__`` (to restore)."""
    sent: list[int] = []
    original = graph_cls.__getstate__

    def counting(self: Any) -> Any:
        sent.append(self.nbytes)
        return original(self)

    graph_cls.__getstate__ = counting
    return sent, original


def run_config(spec: Record) -> Record:
    """The local search, the Dask search and the Dask search with the view's size hidden."""
    import dask
    import joblib
    import numpy as np
    import torch
    from distributed import Client, LocalCluster
    from sklearn.model_selection import GridSearchCV

    from skvqgnn import Graph, NodeSet, VQGNNClassifier

    torch.set_num_threads(1)
    name = spec["dataset"]
    if name.startswith("csbm-"):  # generated: n nodes, degree 10, 64 dense features
        from skvqgnn.datasets import make_csbm

        A, X, y, split = make_csbm(
            int(float(name[5:])), 5, avg_degree=10, n_features=64, random_state=0
        )
    else:
        A, X, y, split = load_dataset(name, Path(spec["data_dir"]))
    graph = Graph(A, X)
    idx = np.flatnonzero(split.train_mask | split.val_mask)
    nodes, labels = graph.nodes(idx), y[idx]
    batch_size = max(64, graph.n_nodes // 8)
    clf = VQGNNClassifier(batch_size=batch_size, max_epochs=spec["max_epochs"], random_state=0)
    grid = {"n_codewords": spec["n_codewords"]}

    def search() -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        gs = GridSearchCV(clf, grid, cv=spec["cv"]).fit(nodes, labels)
        return gs.cv_results_["mean_test_score"], time.perf_counter() - t

    local, local_s = search()
    runs: dict[str, Record] = {}
    if not spec["malloc_trim"]:  # as doc/howto/grid_search_dask.md recommends
        dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    cluster = LocalCluster(
        n_workers=spec["n_workers"],
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        worker_dashboard_address=None,
    )
    with Client(cluster) as client:
        # every worker imports the package and torch before the timed searches
        client.run(lambda: __import__("skvqgnn.classifier"))
        for name in ("size hidden", "sent once"):
            sent, original = _count_pickles(Graph)
            hidden = NodeSet.__sizeof__
            if name == "size hidden":
                NodeSet.__sizeof__ = object.__sizeof__
            try:
                with joblib.parallel_backend("dask"):
                    scores, seconds = search()
            finally:
                Graph.__getstate__ = original
                NodeSet.__sizeof__ = hidden
            runs[name] = {
                "seconds": seconds,
                "pickles": len(sent),
                "bytes": int(sum(sent)),
                "max_score_diff": float(np.abs(scores - local).max()),
            }
    cluster.close()
    return {
        **spec,
        "n_nodes": graph.n_nodes,
        "graph_bytes": graph.nbytes,
        "tasks": len(spec["n_codewords"]) * spec["cv"],
        "local_s": local_s,
        "local_scores": [float(s) for s in local],
        "dask": runs,
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def summary(record: Record) -> str:
    once, hidden = record["dask"]["sent once"], record["dask"]["size hidden"]
    return (
        f"{record['dataset']}: graph pickled {once['pickles']}x (size hidden: "
        f"{hidden['pickles']}x), local {record['local_s']:.1f} s, Dask {once['seconds']:.1f} s"
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def render(meta: Record, records: list[Record], regenerated: str | None) -> str:
    """Provenance, one row per search and the checks."""
    lines = machine_lines(meta, records, regenerated)
    lines += [
        "",
        "| dataset | graph MiB | tasks | search | graph pickled by the client | MiB sent | "
        "wall s | largest score difference from local |",
        "|" + "---|" * 8,
    ]
    for r in records:
        head = f"| {r['dataset']} | {_mib(r['graph_bytes'])} | {r['tasks']} |"
        lines.append(f"{head} local, `n_jobs=1` | 0 | 0 | {r['local_s']:.1f} | |")
        for name, label in (
            ("sent once", f"Dask, {r['n_workers']} worker processes"),
            ("size hidden", "Dask, the view's size hidden (reference)"),
        ):
            d = r["dask"][name]
            lines.append(
                f"{head} {label} | {d['pickles']} | {_mib(d['bytes'])} | {d['seconds']:.1f} | "
                f"{d['max_score_diff']:.2g} |"
            )
    lines.append("")
    for r in records:
        once = r["dask"]["sent once"]
        checks = [
            ("the graph leaves the client once", once["pickles"] == 1),
            ("the Dask search finds the local scores", once["max_score_diff"] < 1e-9),
        ]
        for text, ok in checks:
            lines.append(f"- **{r['dataset']}: {text}**: **{'PASS' if ok else 'FAIL'}**")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["cora"])
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--n-codewords", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument(
        "--malloc-trim",
        action="store_true",
        help="keep Dask's MALLOC_TRIM_THRESHOLD_=65536 in the workers (by default it is unset)",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=page_for(__file__), help=OUT_HELP)
    parser.add_argument("--json", type=Path, default=None, help="raw per-run records")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backbones, args.seeds = ["gcn"], [0]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    specs = lambda: [  # noqa: E731
        {
            "dataset": dataset,
            "data_dir": str(args.data_dir),
            "n_workers": args.n_workers,
            "n_codewords": args.n_codewords,
            "cv": args.cv,
            "max_epochs": args.max_epochs,
            "malloc_trim": args.malloc_trim,
        }
        for dataset in args.datasets
    ]
    serve(args, __file__, specs, run_config, summary, render)


if __name__ == "__main__":
    main()
