"""Epoch time against its compute floor: a VQ epoch, the package's full-graph epoch and PyTorch
Geometric's full-graph ``GCNConv`` epoch, in one process, next to what the machine's measured
arithmetic allows.

The floor of an epoch is its work divided by this machine's measured throughput, with one
torch thread: dense products (the layers' forward and backward, and the nearest-codeword
searches' distance products) at the rate of a large ``torch.mm``; sparse message passing
(``C X``, ``C H`` and its backward) at the rate of torch's CSR product on the graph itself; the
searches' minimum over the codewords at the rate of ``amin`` on a block of distances that
stays in cache (a vectorised reduction over data a fused distance-and-minimum kernel would
never write to memory); the codebooks' moving averages at the rate of
a memory copy. Epoch times are CPU times (``time.process_time``) of single-threaded epochs,
medians over the epochs after the first.

The VQ model's ``predict`` on every node of its training graph is timed too, with VQ inference
and with exact inference, alternately, the median of three calls each.

The provenance, table and bars replace the generated region of ``--out`` (by default
``doc/benchmarks/epoch_floor.md``); raw records go to ``--json``, from which ``--from-json``
rebuilds the region. The parent process imports only the standard library.
"""

from __future__ import annotations

import argparse
import statistics
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

# backbones without a full-graph epoch at these sizes, and why
NO_FULL_GRAPH = {"transformer": "its global attention scores every pair of nodes: n² of them"}

BARS = {  # the targets: VQ epoch against ...
    "floor": 4.0,  # at most 4x its floor
    "pyg": 1.0,  # faster than PyG's full graph
    "full": 1.5,  # at most 1.5x the package's own full-graph epoch
}


# --------------------------------------------------------------------------------------------
# Worker
# --------------------------------------------------------------------------------------------


def _median_time(f: Any, repeat: int = 5) -> float:
    f()
    times = []
    for _ in range(repeat):
        t = time.process_time()
        f()
        times.append(time.process_time() - t)
    return statistics.median(times)


def throughput(C: Any) -> Record:
    """This machine's rates with one thread: sgemm FLOP/s, CSR product FLOP/s on ``C``,
    ``amin`` elements/s, copy bytes/s."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    sgemm = 2 * 1024**3 / _median_time(lambda: torch.mm(a, b))
    Ct = torch.sparse_csr_tensor(
        torch.from_numpy(C.indptr.astype("int64")),
        torch.from_numpy(C.indices.astype("int64")),
        torch.from_numpy(C.data),
        C.shape,
    )
    h = torch.randn(C.shape[1], 64)
    spmm = 2 * C.nnz * 64 / _median_time(lambda: Ct @ h)
    # a 1 MiB block, the size of the search's own blocks: in cache, as a fused kernel's
    # distances would be (amin over a (16, 1024, 256) tensor, 16 MiB, runs at half the rate)
    d = torch.randn(16, 64, 256)
    amin = d.numel() / _median_time(lambda: [d.amin(-1) for _ in range(16)]) * 16
    big = torch.empty(2**26)
    copy = 2 * big.numel() * 4 / _median_time(lambda: big.clone())
    return {"sgemm": sgemm, "spmm": spmm, "amin": amin, "copy": copy}


def floors(spec: Record, nnz: int, rates: Record, depth: int = 1) -> Record:
    """Seconds of work of one epoch at ``rates``: ``depth`` hidden layers of 64 features, one
    fixed convolution per layer; every hidden layer's output is quantised for the convolution
    after it (a feature and a gradient search, moving averages of both)."""
    n, f, h, c, k = spec["n_nodes"], spec["n_features"], 64, 5, spec["n_codewords"]
    # forward, and backward twice its flops
    dense = 6 * n * (f * h + (depth - 1) * h * h + h * c) / rates["sgemm"]
    messages_vq = 2 * nnz * (f + 2 * h * depth) / rates["spmm"]  # C X; each C H and backward
    # per quantised layer: feature distances (width h) and gradient distances (width 2h)
    search_gemm = depth * 2 * n * k * (h + 2 * h) / rates["sgemm"]
    search_min = depth * 2 * n * (h // 4) * k / rates["amin"]  # two searches, P = h / 4
    ema = depth * 4 * n * 2 * h * 4 / rates["copy"]  # read inputs and gradients, write sums
    vq = dense + messages_vq + search_gemm + search_min + ema
    return {
        "vq": vq,
        "full": dense + messages_vq,
        "parts": {
            "dense layers": dense,
            "message passing": messages_vq,
            "search products": search_gemm,
            "search minimum": search_min,
            "moving averages": ema,
        },
    }


def run_config(spec: Record) -> Record:
    """Time the three epochs and the machine's rates on one graph."""
    import numpy as np
    import torch
    from peers import pyg_data, pyg_forward, pyg_network

    from skvqgnn import Callback, Graph, VQGNNClassifier
    from skvqgnn.datasets import make_csbm
    from skvqgnn.graph import gcn_norm

    torch.set_num_threads(1)
    A, X, y, split = make_csbm(
        spec["n_nodes"], 5, avg_degree=10, n_features=spec["n_features"], random_state=0
    )
    graph = Graph(A, X)
    labels = np.where(split.train_mask, y, -1)

    class Epochs(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_epoch_start(self, fit: Any) -> None:
            self.t0 = time.process_time()

        def on_epoch_end(self, fit: Any, record: Record) -> None:
            self.times.append(time.process_time() - self.t0)

    def fit(backbone: str, batch_size: int | None, depth: int = 1) -> tuple[Any, list[float]]:
        timer = Epochs()
        clf = VQGNNClassifier(
            backbone=backbone,
            batch_size=batch_size,
            hidden_layer_sizes=(64,) * depth,
            n_codewords=spec["n_codewords"],
            max_epochs=spec["epochs"],
            random_state=0,
            device="cpu",
        ).fit(graph.nodes(), labels, callbacks=[timer])
        return clf, timer.times

    epochs, fitted = {}, {}
    modes = (("vq", spec["batch_size"]), ("full", None))
    for mode, batch_size in modes:
        fitted[mode], epochs[mode] = fit("gcn", batch_size)
    backbones = {}  # the other backbones' VQ and full-graph epochs, without floors
    for backbone in spec.get("other_backbones", []):
        runs = [(m, b) for m, b in modes if b is not None or backbone not in NO_FULL_GRAPH]
        times = {mode: fit(backbone, b)[1] for mode, b in runs}
        backbones[backbone] = {"full": None}
        backbones[backbone].update({mode: statistics.median(t[1:]) for mode, t in times.items()})
    depths = {}  # gcn with more hidden layers: epochs against their floors
    for depth in spec.get("depths", []):
        times = {mode: fit("gcn", b, depth)[1] for mode, b in modes}
        depths[str(depth)] = {mode: statistics.median(t[1:]) for mode, t in times.items()}
    predict: dict[str, list[float]] = {"vq": [], "exact": []}
    for _ in range(3):
        for inference in predict:
            clf = fitted["vq"].set_params(inference=inference)
            t = time.process_time()
            clf.predict(graph.nodes())
            predict[inference].append(time.process_time() - t)
    data = pyg_data(A, X, y, split)
    net = pyg_network("gcn", [X.shape[1], 64, 5])
    optimiser = torch.optim.Adam(net.parameters(), lr=0.002, weight_decay=5e-4)
    epochs["pyg"] = []
    for _ in range(spec["epochs"]):
        t = time.process_time()
        net.train()
        optimiser.zero_grad()
        logits = pyg_forward(net, data.x, data.edge_index, 0.5)
        loss = torch.nn.functional.cross_entropy(logits[data.train_mask], data.y[data.train_mask])
        loss.backward()
        optimiser.step()
        epochs["pyg"].append(time.process_time() - t)
    C = gcn_norm(graph.A)
    rates = throughput(C)
    for depth, times in depths.items():
        fl = floors(spec, C.nnz, rates, int(depth))
        times.update(floor_vq=fl["vq"], floor_full=fl["full"])
    return {
        **spec,
        "n_entries": int(C.nnz),
        "epochs_s": epochs,
        "median_s": {m: statistics.median(t[1:]) for m, t in epochs.items()},
        "predict_s": {m: statistics.median(t) for m, t in predict.items()},
        "rates": rates,
        "floor_s": floors(spec, C.nnz, rates),
        "backbones": backbones,
        "depths": depths,
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def summary(record: Record) -> str:
    m, fl = record["median_s"], record["floor_s"]
    return (
        f"n={record['n_nodes']:,}: VQ epoch {m['vq']:.3f} s (floor {fl['vq']:.3f} s), "
        f"full graph {m['full']:.3f} s, PyG {m['pyg']:.3f} s"
    )


def render(meta: Record, records: list[Record], regenerated: str | None) -> str:
    """Provenance, the rates, the epochs against their floors, the floor's parts and the bars."""
    lines = machine_lines(meta, records, regenerated)
    lines += [
        "",
        "| n | stored entries | sgemm GFLOP/s | CSR GFLOP/s | amin G elem/s | copy GB/s | "
        "VQ epoch s | VQ floor s | VQ / floor | full-graph epoch s | full floor s | "
        "PyG GCNConv epoch s | VQ / full | VQ / PyG |",
        "|" + "---|" * 14,
    ]
    for r in records:
        m, fl, rt = r["median_s"], r["floor_s"], r["rates"]
        lines.append(
            f"| {r['n_nodes']:,} | {r['n_entries']:,} | {rt['sgemm'] / 1e9:.0f} | "
            f"{rt['spmm'] / 1e9:.1f} | {rt['amin'] / 1e9:.1f} | {rt['copy'] / 1e9:.1f} | "
            f"{m['vq']:.3f} | {fl['vq']:.3f} | {m['vq'] / fl['vq']:.1f} | {m['full']:.3f} | "
            f"{fl['full']:.3f} | {m['pyg']:.3f} | {m['vq'] / m['full']:.2f} | "
            f"{m['vq'] / m['pyg']:.2f} |"
        )
    last = records[-1]
    parts = last["floor_s"]["parts"]
    lines += [
        "",
        f"The VQ floor at n = {last['n_nodes']:,}, by part: "
        + ", ".join(f"{name} {s * 1e3:.0f} ms" for name, s in parts.items())
        + ".",
        "",
    ]
    m, fl = last["median_s"], last["floor_s"]
    checks = [
        (f"VQ epoch at most {BARS['floor']:g}x its floor", m["vq"] / fl["vq"], BARS["floor"]),
        ("VQ epoch faster than PyG's full graph", m["vq"] / m["pyg"], BARS["pyg"]),
        (f"VQ epoch at most {BARS['full']:g}x the full-graph epoch", m["vq"] / m["full"], 1.5),
    ]
    predict = last.get("predict_s")
    if predict is not None:
        ratio = predict["vq"] / predict["exact"]
        checks.append(("VQ inference at least as fast as exact inference", ratio, 1.0))
        lines += [
            f"`predict` on all {last['n_nodes']:,} nodes of the training graph: VQ inference "
            f"{predict['vq']:.3f} s, exact inference {predict['exact']:.3f} s.",
            "",
        ]
    for text, ratio, bar in checks:
        verdict = "PASS" if ratio <= bar else "FAIL"
        lines.append(f"- **Bar: {text}**: {ratio:.2f}x, **{verdict}**")
    others = last.get("backbones") or {}
    if others:
        lines += [
            "",
            f"Epochs of the other backbones on the same graph (n = {last['n_nodes']:,}, the same "
            "batches and codebooks; medians after the first epoch):",
            "",
            "| backbone | VQ epoch s | full-graph epoch s | VQ / full |",
            "|---|---|---|---|",
        ]
        rows = {"gcn": {"vq": m["vq"], "full": m["full"]}, **others}
        for name, t in rows.items():
            full, ratio = "—", "—"
            if t.get("full") is not None:
                full, ratio = f"{t['full']:.3f}", f"{t['vq'] / t['full']:.2f}"
            lines.append(f"| {name} | {t['vq']:.3f} | {full} | {ratio} |")
        skipped = [name for name, t in others.items() if t.get("full") is None]
        for name in skipped:
            why = NO_FULL_GRAPH.get(name, "not run")
            lines += ["", f"No full-graph epoch for {name}: {why}."]
    deeper = last.get("depths") or {}
    if deeper:
        lines += [
            "",
            f"gcn with more hidden layers of 64 (n = {last['n_nodes']:,}, the same graph and "
            "batch size; each quantised layer's searches and moving averages counted in its "
            "floor as above; no bar):",
            "",
            "| hidden layers | VQ epoch s | VQ floor s | VQ / floor | full-graph epoch s | "
            "full floor s | VQ / full |",
            "|---|---|---|---|---|---|---|",
        ]
        rows = {"1": {**m, "floor_vq": fl["vq"], "floor_full": fl["full"]}, **deeper}
        for depth, t in rows.items():
            lines.append(
                f"| {depth} | {t['vq']:.3f} | {t['floor_vq']:.3f} | "
                f"{t['vq'] / t['floor_vq']:.1f} | {t['full']:.3f} | {t['floor_full']:.3f} | "
                f"{t['vq'] / t['full']:.2f} |"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e5])
    parser.add_argument("--n-features", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--n-codewords", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--other-backbones",
        nargs="*",
        default=["sage", "gat", "gin", "gcnii", "transformer"],
        help="backbones whose VQ and full-graph epochs are timed too (no floor; no full-graph "
        "epoch for the transformer)",
    )
    parser.add_argument(
        "--depths",
        nargs="*",
        type=int,
        default=[2, 3],
        help="more hidden layers at which gcn's VQ and full-graph epochs are timed, with floors",
    )
    parser.add_argument("--out", type=Path, default=page_for(__file__), help=OUT_HELP)
    parser.add_argument("--json", type=Path, default=None, help="raw per-run records")
    parser.add_argument("--from-json", type=Path, nargs="+", default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.datasets, args.backbones, args.seeds, args.max_epochs = ["csbm"], ["gcn"], [0], args.epochs
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    specs = lambda: [  # noqa: E731
        {
            "n_nodes": int(n),
            "n_features": args.n_features,
            "batch_size": args.batch_size,
            "n_codewords": args.n_codewords,
            "epochs": args.epochs,
            "other_backbones": args.other_backbones,
            "depths": args.depths,
        }
        for n in args.sizes
    ]
    serve(args, __file__, specs, run_config, summary, render)


if __name__ == "__main__":
    main()
