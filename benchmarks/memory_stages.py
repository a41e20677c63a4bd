"""Memory of a fit, stage by stage, against the size of the data: how large a graph one machine
trains.

For each (n, sampler, backbone) configuration a fresh subprocess (this script with ``--worker``)
generates a contextual SBM graph (``skvqgnn.datasets.make_csbm``, average degree 10, 64
features), builds a ``Graph`` from it and drops the raw arrays, fits ``VQGNNClassifier`` for a
few epochs and predicts every node. Each stage's peak resident set size is read from the kernel
(``VmHWM`` of ``/proc/self/status``, reset at every stage boundary), and set against the *data
floor*: the bytes of the graph itself at its leanest, float32 features plus a CSR adjacency of
int32 indices, float32 weights and int32 row pointers. Stages: generation, ``Graph``, the fit's
set-up (convolution matrices, partition, codebook initialisation: up to its first epoch), each
epoch, the end of the fit (the codebooks' eval-mode refresh), and ``predict``.

With ``--features disk`` the features are saved to a ``.npy`` file (in ``$TMPDIR``), dropped
from memory and opened memory-mapped before the ``Graph`` is built, as ``doc/howto/scaling_up.md``
shows for features larger than memory. The pages of a mapped file count in the RSS while they
are resident, but the kernel can drop them at any time; what the process cannot give back is
its anonymous memory (``RssAnon``), which a thread samples every 10 ms in every stage, beside
the file-backed pages (``RssFile``). Runs with features on disk get their own table, their
anonymous peak set against the adjacency alone, and, where two sizes were run, a linear
projection of that peak to 10⁸ nodes. With ``--graph local`` the graph is written to disk a
block at a time by ``local_csbm.py`` (node ids in an order that keeps edges short) and both
its adjacency and its features are memory-mapped: the runs larger than memory, with a table
of their own and the moonshot line.

The provenance, table and bar replace the generated region of ``--out`` (by default
``doc/benchmarks/memory_stages.md``); raw records go to ``--json``, from which ``--from-json``
rebuilds the region. As in the other scripts, the parent process imports only the standard
library.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    OUT_HELP,
    Record,
    machine_lines,
    page_for,
    serve,
)

SAMPLERS = {  # mode -> estimator parameters ("pyg": PyTorch Geometric, not the estimator)
    "random": {"sampler": "random"},
    "cluster": {"sampler": "cluster", "partitioner": "metis"},
    "cluster-lp": {"sampler": "cluster", "partitioner": "label_propagation"},
    "cluster-contiguous": {"sampler": "cluster", "partitioner": "contiguous"},
    "full": {"batch_size": None, "inference": "exact"},
    "pyg": None,
}
BACKBONES = ("gcn", "sage", "gat", "gin", "gcnii", "transformer")
BAR = 2.0  # a fit's absolute peak RSS at most this many data floors
GIB = 2**30


# --------------------------------------------------------------------------------------------
# Worker: one configuration in this process
# --------------------------------------------------------------------------------------------


def _status_gib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / GIB
    raise KeyError(field)


class Stages:
    """Peak RSS per stage: ``begin(name)`` closes the running stage and opens the next.

    Besides the kernel's exact peak of the whole RSS (``VmHWM``), a thread samples the
    anonymous and the file-backed parts of the RSS every ``interval`` seconds and keeps their
    largest values in the stage (a peak shorter than the interval can be missed)."""

    def __init__(self, interval: float = 0.01) -> None:
        import ctypes

        self.libc = ctypes.CDLL("libc.so.6")
        self.stages: list[Record] = []
        self.name: str | None = None
        self.anon = self.file = 0.0
        self.interval = interval
        self.done = threading.Event()
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while not self.done.wait(self.interval):
            self._update()

    def _update(self) -> None:
        self.anon = max(self.anon, _status_gib("RssAnon"))
        self.file = max(self.file, _status_gib("RssFile"))

    def begin(self, name: str | None) -> None:
        import gc

        if self.name is not None:
            peak = _status_gib("VmHWM")
            self._update()
            self.stages.append(
                {
                    "stage": self.name,
                    "peak_gib": round(peak, 3),
                    "above_gib": round(peak - self.before, 3),
                    "anon_gib": round(self.anon, 3),
                    "file_gib": round(self.file, 3),
                    "seconds": round(time.perf_counter() - self.t0, 2),
                }
            )
        self.name = name
        if name is None:
            self.done.set()
            return
        gc.collect()
        self.libc.malloc_trim(0)  # resident memory is live memory only
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS (Linux >= 4.0)
        self.before, self.t0 = _status_gib("VmRSS"), time.perf_counter()
        self.anon = self.file = 0.0
        self._update()


def features_on_disk(X: Any, folder: str) -> Any:
    """``X`` saved as ``folder/X.npy`` and opened memory-mapped, with none of its pages left in
    the page cache: the features as a user whose features do not fit in memory has them."""
    import numpy as np

    path = os.path.join(folder, "X.npy")
    np.save(path, X)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # written back, so that the kernel can drop the pages
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return np.load(path, mmap_mode="r")


def run_config(spec: Record) -> Record:
    """Generate, build, fit and predict one configuration, stage by stage."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="memory_stages_") as scratch:
        return _run_config(spec, scratch)


def _run_config(spec: Record, scratch: str) -> Record:
    import numpy as np
    import torch

    from skvqgnn import Graph
    from skvqgnn.datasets import make_csbm

    torch.set_num_threads(1)
    n = spec["n_nodes"]
    stages = Stages()
    baseline, baseline_anon = _status_gib("VmRSS"), _status_gib("RssAnon")
    stages.begin("generate")
    if spec.get("graph") == "local":
        from local_csbm import drop_from_page_cache, write_local_csbm

        data = write_local_csbm(
            scratch,
            n,
            avg_degree=spec["avg_degree"],
            n_features=spec["n_features"],
            long_range=spec["long_range"],
        )
        drop_from_page_cache(scratch)
        A, X, y = data["A"], data["X"], data["y"]
        labels = np.where(data["split"] == 0, y, np.int8(-1))
        test = data["split"] == 2
        del data
    else:
        A, X, y, split = make_csbm(
            n, 5, avg_degree=spec["avg_degree"], n_features=spec["n_features"], random_state=0
        )
        X = np.ascontiguousarray(X, dtype=np.float32)
        labels, test = np.where(split.train_mask, y, -1), split.test_mask
        if spec.get("features") == "disk":
            X = features_on_disk(X, scratch)
    adjacency = (A.nnz * 8 + (n + 1) * 4) / GIB
    floor = X.nbytes / GIB + adjacency
    stages.begin("Graph")
    if spec["sampler"] == "pyg":
        from peers import pyg_data

        data, n_entries = pyg_data(A, X, y, split), int(A.nnz)
        del A, X  # the Data holds the graph from here on
        fit_s, pred = _pyg_fit(spec, stages, data)
    else:
        graph = Graph(A, X)
        del A, X  # the Graph holds the data from here on
        fit_s, pred = _skvqgnn_fit(spec, stages, graph, labels)
        n_entries = int(graph.A.nnz)
    stages.begin(None)
    return {
        **spec,
        "n_entries": n_entries,
        "floor_gib": round(floor, 3),
        "adjacency_gib": round(adjacency, 3),
        "baseline_gib": round(baseline, 3),
        "baseline_anon_gib": round(baseline_anon, 3),
        "stages": stages.stages,
        "fit_s": round(fit_s, 1),
        "test_accuracy": round(float(np.mean(pred[test] == y[test])), 4),
        "torch": torch.__version__,
    }


def _skvqgnn_fit(spec: Record, stages: Stages, graph: Any, labels: Any) -> tuple[float, Any]:
    """Fit and predict with ``VQGNNClassifier``; stage boundaries from its callbacks."""
    from skvqgnn import Callback, VQGNNClassifier

    class Boundaries(Callback):
        def on_fit_start(self, fit: Any) -> None:
            stages.begin("epoch 1")

        def on_epoch_end(self, fit: Any, record: Record) -> None:
            stages.begin(f"epoch {fit.epoch + 2}" if fit.epoch + 1 < fit.max_epochs else "finish")

    settings = {"batch_size": spec["batch_size"], **SAMPLERS[spec["sampler"]]}
    clf = VQGNNClassifier(
        backbone=backbone(spec),
        n_codewords=spec["n_codewords"],
        max_epochs=spec["epochs"],
        random_state=0,
        device="cpu",
        **settings,
    )
    stages.begin("set-up")
    t0 = time.perf_counter()
    clf.fit(graph.nodes(), labels, callbacks=[Boundaries()])
    fit_s = time.perf_counter() - t0
    stages.begin("predict")
    return fit_s, clf.predict(graph.nodes())


def _pyg_fit(spec: Record, stages: Stages, data: Any) -> tuple[float, Any]:
    """PyTorch Geometric's two-layer ``GCNConv`` network trained on the full graph (Adam,
    dropout 0.5, as in ``peers.py``); building its ``Data`` was the ``Graph`` stage."""
    import torch
    from peers import pyg_forward, pyg_network, pyg_predict

    stages.begin("set-up")
    t0 = time.perf_counter()
    network = pyg_network("gcn", [spec["n_features"], 64, 5])
    optimiser = torch.optim.Adam(network.parameters(), lr=0.002, weight_decay=5e-4)
    for epoch in range(spec["epochs"]):
        stages.begin(f"epoch {epoch + 1}")
        network.train()
        optimiser.zero_grad()
        logits = pyg_forward(network, data.x, data.edge_index, 0.5)
        loss = torch.nn.functional.cross_entropy(logits[data.train_mask], data.y[data.train_mask])
        loss.backward()
        optimiser.step()
        del logits, loss
    fit_s = time.perf_counter() - t0
    stages.begin("predict")
    return fit_s, pyg_predict(network, data, 0.5)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


FIT_STAGES = ("generate", "Graph")  # the stages before the fit, not the bar's


def backbone(record: Record) -> str:
    """The run's backbone (records without one are gcn's)."""
    return record.get("backbone", "gcn")


def label(record: Record) -> str:
    """The run's sampler, and its backbone where it is not gcn."""
    other = backbone(record) != "gcn"
    return record["sampler"] + (f" {backbone(record)}" if other else "")


def on_disk(record: Record) -> bool:
    """Whether the run's features were memory-mapped from disk."""
    return record.get("features") == "disk"


def fit_peak(record: Record, key: str = "peak_gib") -> float:
    """The peak (GiB; by default of the whole RSS, ``key="anon_gib"``: of its anonymous part)
    from the fit's set-up to the end of ``predict``."""
    return max(s[key] for s in record["stages"] if s["stage"] not in FIT_STAGES)


def summary(record: Record) -> str:
    head = f"n={record['n_nodes']:,} {label(record)}"
    tail = f"fit {record['fit_s']:.0f} s, accuracy {record['test_accuracy']:.3f}"
    if on_disk(record):
        anon = fit_peak(record, "anon_gib")
        return (
            f"{head}, features on disk: adjacency {record['adjacency_gib']:.2f} GiB, anonymous fit "
            f"peak {anon:.2f} GiB ({anon / record['adjacency_gib']:.2f}x), {tail}"
        )
    return (
        f"{head}: floor {record['floor_gib']:.2f} GiB, "
        f"fit peak {fit_peak(record):.2f} GiB ({fit_peak(record) / record['floor_gib']:.2f}x), "
        f"{tail}"
    )


def _stage_names(records: list[Record]) -> list[str]:
    names: list[str] = []
    for r in records:
        names += [s["stage"] for s in r["stages"] if s["stage"] not in names]
    return names


def _table(header: list[str], records: list[Record], names: list[str], cell: Any):
    """The header lines of a Markdown table, and each record (by size, then sampler) with its
    cells for the stages ``names`` (``cell(stage)``; empty where the run had no such stage)."""
    head = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for r in sorted(
        records, key=lambda r: (r["n_nodes"], r["sampler"], BACKBONES.index(backbone(r)))
    ):
        by = {s["stage"]: s for s in r["stages"]}
        rows.append((r, [cell(by[name]) if name in by else "" for name in names]))
    return head, rows


def _in_memory_table(records: list[Record]) -> list[str]:
    """The per-stage table of the runs with the features in memory, and the bar."""
    names = _stage_names(records)
    header = [
        "n",
        "stored entries",
        "sampler",
        "floor GiB",
        *names,
        "fit peak / floor",
        "(peak - interpreter) / floor",
        "fit s",
        "test acc.",
    ]
    lines = [
        "Peak RSS of each stage in GiB, absolute (the process, the graph included) and, in "
        "brackets, above the stage's start; the data floor is float32 `X` plus the int32/float32 "
        "CSR adjacency; the interpreter with torch and skvqgnn imported holds "
        f"{min(r['baseline_gib'] for r in records):.2f} GiB before any data.",
        "",
    ]
    head, rows = _table(
        header, records, names, lambda s: f"{s['peak_gib']:.2f} (+{s['above_gib']:.2f})"
    )
    lines += head
    for r, cells in rows:
        ratio = fit_peak(r) / r["floor_gib"]
        above = (fit_peak(r) - r["baseline_gib"]) / r["floor_gib"]
        lines.append(
            f"| {r['n_nodes']:,} | {r['n_entries']:,} | {label(r)} | {r['floor_gib']:.2f} | "
            + " | ".join(cells)
            + f" | {ratio:.2f} | {above:.2f} | {r['fit_s']:.0f} | {r['test_accuracy']:.3f} |"
        )
    largest = max(records, key=lambda r: r["n_nodes"])
    at_largest = [r for r in records if r["n_nodes"] == largest["n_nodes"]]
    verdicts = []
    for r in sorted(at_largest, key=lambda r: (r["sampler"], BACKBONES.index(backbone(r)))):
        ratio = fit_peak(r) / r["floor_gib"]
        verdicts.append(f"{label(r)} {ratio:.2f}x: **{'PASS' if ratio <= BAR else 'FAIL'}**")
    lines += [
        "",
        f"**Bar: a fit (set-up, epochs, refresh) and `predict` peak at most {BAR:g}x the data "
        f"floor at n = {largest['n_nodes']:,}**: " + "; ".join(verdicts) + ".",
    ]
    return lines


PROJECT_TO = 10**8  # nodes: the size the projection of the runs with features on disk aims at


def projection(records: list[Record]) -> float | None:
    """The anonymous fit peak (GiB) at `PROJECT_TO` nodes, extrapolated linearly through the
    two largest sizes of ``records`` (one sampler, features on disk, the same average degree);
    ``None`` with fewer than two sizes."""
    by_size = {r["n_nodes"]: fit_peak(r, "anon_gib") for r in records}
    if len(by_size) < 2:
        return None
    (n1, p1), (n2, p2) = sorted(by_size.items())[-2:]
    return p2 + (p2 - p1) / (n2 - n1) * (PROJECT_TO - n2)


def local_graph(record: Record) -> bool:
    """Whether the run's graph came from ``local_csbm.py`` (``--graph local``)."""
    return record.get("graph") == "local"


LOCAL_INTRO = (
    "**Graph and features on disk, node ids in local order** (`--graph local`): "
    "`local_csbm.py` writes the graph a block of nodes at a time, with `make_csbm`'s model of "
    "classes, degrees and features but edges between nodes at most 1000 ids apart (except a "
    "long-range share, if any); the adjacency and the features are opened memory-mapped and "
    'the `Graph` uses both in place. With `partitioner="contiguous"` (`cluster-contiguous`) '
    "the parts are ranges of ids, and a batch reads its rows from a few stretches of the "
    "files. Anonymous peak per stage in GiB, file-backed peak in brackets, as above."
)


def _on_disk_table(records: list[Record], memory_gib: float, intro: str | None = None) -> list[str]:
    """The runs with the features memory-mapped from disk: anonymous and file-backed peaks per
    stage, the anonymous peak against the adjacency, and its projection; with ``intro``
    (graphs from ``local_csbm.py``), the largest run against the machine's memory instead."""
    names = [n for n in _stage_names(records) if n != "generate"]
    header = [
        "n",
        "stored entries",
        "sampler",
        "X on disk GiB",
        "adjacency GiB",
        *names,
        "fit anon. peak GiB",
        "/ adjacency",
        "fit s",
        "test acc.",
    ]
    if intro is not None:
        header[3:3] = ["batch", "long-range edges"]
    lines = [
        "",
        intro
        or "**Features memory-mapped from disk** (`--features disk`): the peak anonymous memory "
        "(`RssAnon`, sampled every 10 ms) of each stage in GiB and, in brackets, the peak of "
        "the file-backed pages (`RssFile`: the mapped features the kernel holds, and may drop, "
        "with the libraries'); the interpreter holds "
        f"{min(r.get('baseline_anon_gib', 0.0) for r in records):.2f} GiB of anonymous memory "
        "before any data.",
        "",
    ]
    head, rows = _table(
        header, records, names, lambda s: f"{s['anon_gib']:.2f} ({s['file_gib']:.2f})"
    )
    lines += head
    for r, cells in rows:
        anon = fit_peak(r, "anon_gib")
        local = f"{r['batch_size']:,} | {r['long_range']:g} | " if intro is not None else ""
        lines.append(
            f"| {r['n_nodes']:,} | {r['n_entries']:,} | {label(r)} | {local}"
            f"{r['floor_gib'] - r['adjacency_gib']:.2f} | {r['adjacency_gib']:.2f} | "
            + " | ".join(cells)
            + f" | {anon:.2f} | {anon / r['adjacency_gib']:.2f} | {r['fit_s']:.0f} | "
            f"{r['test_accuracy']:.3f} |"
        )
    if intro is not None:
        largest = max(records, key=lambda r: r["n_nodes"])
        anon, whole = fit_peak(largest, "anon_gib"), fit_peak(largest)
        verdict = "PASS" if anon < memory_gib else "FAIL"
        return [
            *lines,
            "",
            f"**Moonshot: {largest['n_nodes']:,} nodes with the features on disk, a peak below "
            f"this machine's {memory_gib:g} GiB**: anonymous fit-and-predict peak {anon:.2f} "
            f"GiB ({label(largest)}), **{verdict}**; with the mapped files' resident pages, "
            f"which the kernel drops under pressure, {whole:.2f} GiB.",
        ]
    for sampler in sorted({label(r) for r in records}):
        projected = projection([r for r in records if label(r) == sampler])
        if projected is not None:
            lines += [
                "",
                f"Projected anonymous fit peak at {PROJECT_TO:,} nodes ({sampler}, linear through "
                f"the two largest sizes above; not run): {projected:.1f} GiB, against this "
                f"machine's {memory_gib:g} GiB of RAM.",
            ]
    return lines


def render(meta: Record, records: list[Record], regenerated: str | None) -> str:
    """The page's generated region: provenance, the per-stage tables and the bar."""
    lines = machine_lines(meta, records, regenerated)
    in_memory = [r for r in records if not on_disk(r)]
    if in_memory:
        lines += ["", *_in_memory_table(in_memory)]
    disk = [r for r in records if on_disk(r) and not local_graph(r)]
    if disk:
        lines += _on_disk_table(disk, meta["memory_gib"])
    local = [r for r in records if local_graph(r)]
    if local:
        lines += _on_disk_table(local, meta["memory_gib"], LOCAL_INTRO)
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6])
    parser.add_argument(
        "--samplers",
        nargs="+",
        choices=list(SAMPLERS),
        default=["random", "cluster", "cluster-lp"],
        help="VQ samplers, or the full-graph references: full (the estimator), pyg (GCNConv)",
    )
    parser.add_argument(
        "--features",
        nargs="+",
        choices=["memory", "disk"],
        default=["memory"],
        help="where the features are: in memory, or memory-mapped from a .npy file in $TMPDIR",
    )
    parser.add_argument(
        "--graph",
        choices=["csbm", "local"],
        default="csbm",
        help="csbm: make_csbm in memory, nodes in random order; local: written to $TMPDIR a "
        "block at a time by local_csbm.py, most edges between nearby ids, the adjacency and "
        "the features memory-mapped (implies --features disk)",
    )
    parser.add_argument(
        "--long-range",
        type=float,
        default=0.0,
        help="--graph local: the fraction of edges joining random nodes; the others join nodes "
        "at most 1000 ids apart",
    )
    parser.add_argument(
        "--backbones",
        nargs="+",
        choices=BACKBONES,
        default=["gcn"],
        help="the estimator's backbone (the samplers' runs are repeated for each)",
    )
    parser.add_argument("--avg-degree", type=float, default=10.0)
    parser.add_argument("--n-features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--n-codewords", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=page_for(__file__), help=OUT_HELP)
    parser.add_argument("--json", type=Path, default=None, help="raw per-run records")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.graph == "local":
        args.features = ["disk"]
    if "disk" in args.features and "pyg" in args.samplers:
        parser.error("--features disk cannot run pyg: PyTorch Geometric copies X into a tensor")
    if "pyg" in args.samplers and args.backbones != ["gcn"]:
        parser.error("pyg runs GCNConv: run it with --backbones gcn")
    # what machine_info records of every benchmark
    args.datasets, args.seeds = [args.graph], [0]
    args.max_epochs = args.epochs
    return args


def make_specs(args: argparse.Namespace) -> list[Record]:
    return [
        {
            "n_nodes": int(n),
            "sampler": sampler,
            "avg_degree": args.avg_degree,
            "n_features": args.n_features,
            "batch_size": args.batch_size,
            "n_codewords": args.n_codewords,
            "epochs": args.epochs,
            **({"features": "disk"} if features == "disk" else {}),
            **({"graph": "local", "long_range": args.long_range} if args.graph == "local" else {}),
            **({"backbone": b} if b != "gcn" else {}),
        }
        for n in args.sizes
        for sampler in args.samplers
        for features in args.features
        for b in args.backbones
    ]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    serve(args, __file__, lambda: make_specs(args), run_config, summary, render)


if __name__ == "__main__":
    main()
