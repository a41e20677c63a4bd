"""Peer benchmark: VQ-GNN next to what a user would pick instead, on the same data and hardware.

Five ways to train the same two-layer network (the estimator's default recipe), each run in a
fresh subprocess (this script with ``--worker``), one after the other:

* ``pyg-full``: PyTorch Geometric ``GCNConv`` / ``SAGEConv`` trained on the full graph;
* ``cluster-gcn``: the same PyG layers trained on the subgraphs induced by batches of METIS parts
  (Cluster-GCN; the edges between batches are dropped), ``n // 8`` nodes per step;
* ``random-node``: the same PyG layers trained on the subgraphs induced by random node sets,
  ``torch_geometric.loader.RandomNodeLoader`` with 8 parts;
* ``vq``: ``VQGNNClassifier`` with ``batch_size = n // 8``;
* ``full``: ``VQGNNClassifier`` with ``batch_size=None``, the package's exact reference.

Each run records its accuracy, the median epoch time, the training time it took to come within
one point of the mean final accuracy of PyG full-graph training (test accuracy after every
epoch, measured while the training clock is paused), its peak RSS increase and the time to
predict every node. The provenance, tables and bars replace the generated region of a Markdown
page (``--out``, by default ``doc/benchmarks/peers.md``, whose hand-written rest says what is
measured and how); ``--json`` saves the raw records, from which ``--from-json`` rebuilds the
region without fitting anything.

As in the other scripts (``_common.py``), the parent process imports only the standard library;
numpy, torch, PyTorch Geometric and skvqgnn are imported inside the worker. PyTorch Geometric is a
benchmark-only dependency (the ``bench`` extra); skvqgnn itself never imports it.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from _common import (
    BAR_POINTS,
    DATASETS,
    Record,
    _max_rss_mib,
    bar_row,
    best_on_validation,
    load_dataset,
    mean_of,
    mean_std,
    page_for,
    parse_args,
    provenance_lines,
    run_script,
)

METHOD_LABELS = {
    "pyg-full": "PyG full graph",
    "cluster-gcn": "Cluster-GCN (PyG, METIS batches)",
    "random-node": "random-node subgraphs (PyG `RandomNodeLoader`)",
    "vq": "VQ-GNN (skvqgnn, batch n/8)",
    "vq-k1024": "VQ-GNN (skvqgnn, batch n/8, 1024 codewords)",
    "full": "skvqgnn full graph",
}
PYG_METHODS = ("pyg-full", "cluster-gcn", "random-node")
# VQ-GNN with its defaults, and with n_codewords=1024: the bars take the one of best mean
# validation accuracy, as a grid search over n_codewords would
VQ_METHODS = ("vq", "vq-k1024")
METHOD_PARAMS = {"vq-k1024": {"n_codewords": 1024}}
PEER_BACKBONES = ("gcn", "sage")
N_BATCHES = 8  # steps of an epoch for the mini-batch methods: n // 8 nodes each
DEVICE = "cpu"  # every method on the same device
INFERENCE_REPEATS = 3  # predictions of every node timed per run; the median is kept
ROUND = 5  # decimals of the per-epoch curves kept in the records
TOLERANCE = 1e-9  # an accuracy equal to the target counts, float error of "mean - 0.01" aside


# --------------------------------------------------------------------------------------------
# The training clock
# --------------------------------------------------------------------------------------------


class TrainingClock:
    """Cumulative training time of a run, paused while the model is evaluated between epochs.

    ``start()`` starts the clock with the method's setup (conversion of the data, partitions,
    codebook initialisation); each ``lap()`` stops it, and the first lap closes the setup while
    every later one closes an epoch: it records the epoch's time and the training time so far,
    evaluates the model and restarts the clock.

    Parameters
    ----------
    evaluate : callable or None
        ``evaluate() -> (val_acc, test_acc)`` of the model as it is. It must leave the training
        as it found it: eval mode without gradients, no random numbers drawn (the training loop
        switches back to training mode at the start of every epoch). May be set (attribute
        ``evaluate``) once the model exists, before the first epoch ends.

    Attributes
    ----------
    setup_time : float or None
        Seconds from ``start()`` to the first lap.
    epoch_times : list of float
        Seconds of each epoch's training.
    curve : list of tuple
        After each epoch: ``(training time so far, val_acc, test_acc)``, the setup included.
    """

    def __init__(self, evaluate: Callable[[], Iterable[float]] | None = None):
        self.evaluate = evaluate
        self.setup_time: float | None = None
        self.epoch_times: list[float] = []
        self.curve: list[tuple[float, float, float]] = []
        self._elapsed = 0.0
        self._since: float | None = None

    def start(self) -> None:
        """Start (or restart) the clock."""
        self._since = time.perf_counter()

    def lap(self) -> None:
        """Stop the clock, record the setup or the epoch just trained, evaluate after an epoch
        and restart the clock."""
        now = time.perf_counter()
        before = self._elapsed
        self._elapsed += now - self._since
        if self.setup_time is None:
            self.setup_time = self._elapsed
        else:
            self.epoch_times.append(self._elapsed - before)
            val, test = self.evaluate()
            self.curve.append((self._elapsed, val, test))
        self.start()

    def epochs(self, n_epochs: int) -> Iterator[int]:
        """``range(n_epochs)`` with a lap before the first epoch and after each: wraps a training
        loop ``for epoch in clock.epochs(n): ...``."""
        self.lap()
        for epoch in range(n_epochs):
            yield epoch
            self.lap()

    def measured(self) -> Record:
        """``setup_time_s``, ``train_time_s`` (setup and every epoch), median ``epoch_time_s``
        and the per-epoch ``curve_time_s``, ``curve_val_acc`` and ``curve_test_acc``."""
        curves = {
            key: [round(point[i], ROUND) for point in self.curve]
            for i, key in enumerate(("curve_time_s", "curve_val_acc", "curve_test_acc"))
        }
        return {
            "epochs": len(self.epoch_times),
            "setup_time_s": self.setup_time,
            "train_time_s": curves["curve_time_s"][-1],
            "epoch_time_s": statistics.median(self.epoch_times),
            **curves,
        }


# --------------------------------------------------------------------------------------------
# The shared recipe and the data
# --------------------------------------------------------------------------------------------


def recipe(max_epochs: int | None) -> Record:
    """The network and training recipe every method uses: ``VQGNNClassifier``'s defaults
    (hidden widths, dropout, Adam's learning rate and weight decay, epochs), ``max_epochs``
    overriding the number of epochs when given."""
    from skvqgnn import VQGNNClassifier

    defaults = VQGNNClassifier().get_params()
    hidden = defaults["hidden_layer_sizes"]
    return {
        "hidden_layer_sizes": [hidden] if isinstance(hidden, int) else list(hidden),
        "dropout": defaults["dropout"],
        "learning_rate": defaults["learning_rate"],
        "weight_decay": defaults["weight_decay"],
        "max_epochs": defaults["max_epochs"] if max_epochs is None else max_epochs,
        "parts_per_batch": defaults["parts_per_batch"],
    }


def accuracies(pred: Any, y: Any, split: Any) -> tuple[float, float]:
    """Validation and test accuracy of predictions ``pred`` (n,) of every node."""
    import numpy as np

    return (
        float(np.mean(pred[split.val_mask] == y[split.val_mask])),
        float(np.mean(pred[split.test_mask] == y[split.test_mask])),
    )


def pyg_data(A: Any, X: Any, y: Any, split: Any) -> Any:
    """The graph as a PyTorch Geometric ``Data``: dense float features ``x`` (as PyG's datasets
    hold them), ``edge_index`` with ``edge_index[0]`` the sender ``j`` and ``edge_index[1]`` the
    receiver ``i`` of every stored entry ``A[i, j]``, the labels and the split's masks."""
    import numpy as np
    import scipy.sparse as sp
    import torch
    from torch_geometric.data import Data

    coo = sp.coo_array(A)
    features = X.toarray() if sp.issparse(X) else X
    return Data(
        x=torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)),
        edge_index=torch.from_numpy(np.vstack([coo.col, coo.row]).astype(np.int64)),
        y=torch.from_numpy(np.asarray(y, dtype=np.int64)),
        train_mask=torch.from_numpy(split.train_mask),
        val_mask=torch.from_numpy(split.val_mask),
        test_mask=torch.from_numpy(split.test_mask),
        num_nodes=A.shape[0],
    )


# --------------------------------------------------------------------------------------------
# PyTorch Geometric methods
# --------------------------------------------------------------------------------------------


def pyg_network(backbone: str, dims: list[int]) -> Any:
    """The layers of the PyG network of widths ``dims = [f0, hidden..., n_classes]``: ``GCNConv``
    (symmetric normalisation with self-loops, its defaults) or ``SAGEConv`` with mean
    aggregation and a root weight, as a ``torch.nn.ModuleList``."""
    import torch
    from torch_geometric.nn import GCNConv, SAGEConv

    def conv(n_in: int, n_out: int) -> Any:
        return GCNConv(n_in, n_out) if backbone == "gcn" else SAGEConv(n_in, n_out, aggr="mean")

    return torch.nn.ModuleList(conv(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))


def pyg_forward(network: Any, x: Any, edge_index: Any, dropout: float) -> Any:
    """Logits of the PyG network: dropout on every layer's input (in training mode), ReLU
    between layers, none after the last."""
    from torch.nn import functional as F

    last = len(network) - 1
    for i, conv in enumerate(network):
        x = conv(F.dropout(x, dropout, network.training), edge_index)
        if i < last:
            x = F.relu(x)
    return x


def pyg_predict(network: Any, data: Any, dropout: float) -> Any:
    """Class of every node: one full-graph forward pass in eval mode without gradients."""
    import torch

    network.eval()
    with torch.no_grad():
        return pyg_forward(network, data.x, data.edge_index, dropout).argmax(1).numpy()


def cluster_batches(data: Any, sampler: Any, rng: Any) -> Iterator[tuple[Any, Any]]:
    """One epoch of Cluster-GCN batches: per batch of METIS parts drawn by ``sampler.epoch(rng)``
    (a ``skvqgnn.samplers.ClusterSampler``), its nodes (sorted ids) and the subgraph of ``data``
    they induce, relabelled ``0 .. len(nodes) - 1``: every edge to another batch is dropped."""
    import torch

    for nodes in sampler.epoch(rng):
        yield nodes, data.subgraph(torch.from_numpy(nodes))


def _pyg_step(network: Any, optimiser: Any, batch: Any, dropout: float) -> None:
    """One Adam step on the mean cross-entropy of the batch's training nodes (none: no step)."""
    from torch.nn import functional as F

    mask = batch.train_mask
    if not bool(mask.any()):
        return
    optimiser.zero_grad(set_to_none=True)
    logits = pyg_forward(network, batch.x, batch.edge_index, dropout)
    F.cross_entropy(logits[mask], batch.y[mask]).backward()
    optimiser.step()


def train_pyg(method: str, backbone: str, dataset: Any, seed: int, settings: Record) -> Record:
    """Train and measure one PyG method (`PYG_METHODS`) in this process.

    Parameters
    ----------
    method : {"pyg-full", "cluster-gcn", "random-node"}
    backbone : {"gcn", "sage"}
    dataset : tuple
        ``(A, X, y, split)``.
    seed : int
        Seeds initialisation, dropout, METIS and the batch order.
    settings : dict
        The recipe (`recipe`).

    Returns
    -------
    dict
        Batch size, the clock's measurements (`TrainingClock.measured`), final accuracies,
        peak RSS before and after training (the final prediction of every node included) and
        the median time of a full-graph prediction.
    """
    import numpy as np
    import torch
    from torch_geometric.loader import RandomNodeLoader

    from skvqgnn.samplers import ClusterSampler

    A, X, y, split = dataset
    n = A.shape[0]
    dropout = settings["dropout"]
    torch.manual_seed(seed)
    gc.collect()
    baseline = _max_rss_mib()
    clock = TrainingClock()
    clock.start()
    data = pyg_data(A, X, y, split)
    dims = [data.num_features, *settings["hidden_layer_sizes"], int(np.max(y)) + 1]
    network = pyg_network(backbone, dims)
    clock.evaluate = lambda: accuracies(pyg_predict(network, data, dropout), y, split)
    optimiser = torch.optim.Adam(
        network.parameters(), lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
    )
    if method == "pyg-full":
        batch_size = None

        def epoch_batches() -> Iterable[Any]:
            return (data,)

    elif method == "cluster-gcn":
        batch_size = n // N_BATCHES
        sampler = ClusterSampler(A, batch_size, settings["parts_per_batch"], seed)
        rng = np.random.default_rng(seed)

        def epoch_batches() -> Iterable[Any]:
            return (subgraph for _, subgraph in cluster_batches(data, sampler, rng))

    else:
        batch_size = math.ceil(n / N_BATCHES)
        loader = RandomNodeLoader(
            data, num_parts=N_BATCHES, shuffle=True, generator=torch.Generator().manual_seed(seed)
        )

        def epoch_batches() -> Iterable[Any]:
            return loader

    for _ in clock.epochs(settings["max_epochs"]):
        network.train()
        for batch in epoch_batches():
            _pyg_step(network, optimiser, batch, dropout)
    pred = pyg_predict(network, data, dropout)
    peak = _max_rss_mib()
    val_acc, test_acc = accuracies(pred, y, split)
    return {
        "batch_size": batch_size,
        **clock.measured(),
        "val_acc": val_acc,
        "test_acc": test_acc,
        **_rss(baseline, peak),
        "inference_time_s": _median_time(
            lambda graph: pyg_predict(network, graph, dropout), [data] * INFERENCE_REPEATS
        ),
    }


# --------------------------------------------------------------------------------------------
# skvqgnn methods
# --------------------------------------------------------------------------------------------


def clock_callback(clock: TrainingClock, nodes: Any, accuracies: Callable[[Any], Any]) -> Any:
    """A ``skvqgnn.Callback`` that times a ``VQGNNClassifier`` fit with ``clock``: the clock
    laps when the set-up ends and after every epoch, and then evaluates the live model
    (``FitLoop.predict``, the inference ``transduction_`` uses, on copies of the codebooks)
    while the training runs unchanged.

    Parameters
    ----------
    clock : TrainingClock
        Its ``evaluate`` is set here: ``accuracies`` of the live classes of ``nodes``.
    nodes : ndarray
        The nodes evaluated after every epoch.
    accuracies : callable
        ``accuracies(classes of nodes) -> (val_acc, test_acc)``.
    """
    from skvqgnn import Callback

    class Clock(Callback):
        def on_fit_start(self, fit: Any) -> None:
            clock.evaluate = lambda: accuracies(live_classes(fit, nodes))
            clock.lap()

        def on_epoch_end(self, fit: Any, record: Any) -> None:
            clock.lap()

    return Clock()


def live_classes(fit: Any, nodes: Any) -> Any:
    """Classes of ``nodes`` by the live state of a running fit (a ``skvqgnn.FitLoop``)."""
    logits = fit.predict(nodes).numpy()
    return fit.estimator.classes_[logits.argmax(1)]


def train_skvqgnn(method: str, backbone: str, dataset: Any, seed: int, settings: Record) -> Record:
    """Fit and measure ``VQGNNClassifier`` (``"vq"``: ``batch_size = n // 8``; ``"vq-k1024"``:
    the same with ``n_codewords=1024``; ``"full"``: ``batch_size=None``) with its defaults
    otherwise, in this process.

    The estimator's own training loop runs unchanged; a callback (`clock_callback`) laps a
    `TrainingClock` after the set-up and each epoch and evaluates the live model then. ``fit``
    computes ``transduction_`` after the last epoch; the peak RSS is read after it.

    Returns
    -------
    dict
        As `train_pyg`, plus for VQ-GNN the median time, test accuracy and agreement of
        exact inference (``inference="exact"``) next to the default VQ inference.
    """
    import numpy as np

    from skvqgnn import Graph, VQGNNClassifier

    A, X, y, split = dataset
    n = A.shape[0]
    batch_size = n // N_BATCHES if method in VQ_METHODS else None

    clf = VQGNNClassifier(
        backbone=backbone,
        batch_size=batch_size,
        random_state=seed,
        max_epochs=settings["max_epochs"],
        device=DEVICE,
        **METHOD_PARAMS.get(method, {}),
    )
    labels = np.where(split.train_mask, y, -1)
    evaluated = np.flatnonzero(split.val_mask | split.test_mask)

    def evaluate(classes: Any) -> tuple[float, float]:
        pred = np.full(n, -1)
        pred[evaluated] = classes
        return accuracies(pred, y, split)

    clock = TrainingClock()
    callback = clock_callback(clock, evaluated, evaluate)
    gc.collect()
    baseline = _max_rss_mib()
    clock.start()
    clf.fit(A, X, labels, callbacks=[callback])
    peak = _max_rss_mib()
    val_acc, test_acc = accuracies(clf.transduction_, y, split)
    record = {
        "batch_size": batch_size,
        **clock.measured(),
        "val_acc": val_acc,
        "test_acc": test_acc,
        **_rss(baseline, peak),
    }
    # VQ-GNN: its default VQ inference and exact inference of the same model; full graph: exact
    vq = method in VQ_METHODS
    timed = {"inference_time_s": "vq", "exact_time_s": "exact"} if vq else {}
    predictions = {}
    for key, inference in (timed or {"inference_time_s": "exact"}).items():
        clf.set_params(inference=inference)
        predictions[inference] = clf.predict(Graph(A, X))  # untimed: code paths loaded once
        graphs = [Graph(A, X) for _ in range(INFERENCE_REPEATS)]  # fresh, their caches empty
        record[key] = _median_time(clf.predict, graphs)
    if vq:
        record["exact_test_acc"] = accuracies(predictions["exact"], y, split)[1]
        record["agreement"] = float(np.mean(predictions["vq"] == predictions["exact"]))
    return record


# --------------------------------------------------------------------------------------------
# Worker: one run in this process
# --------------------------------------------------------------------------------------------


def _rss(baseline: float, peak: float) -> Record:
    return {"rss_baseline_mib": baseline, "rss_peak_mib": peak, "rss_increase_mib": peak - baseline}


def _median_time(predict: Callable[[Any], Any], graphs: list[Any]) -> float:
    """Median wall-clock seconds of ``predict(graph)`` over ``graphs``, one call each; the
    caller has predicted once before, untimed."""
    times = []
    for graph in graphs:
        start = time.perf_counter()
        predict(graph)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _warm_up() -> None:
    """Import what torch imports lazily when the first optimiser is built (``torch._dynamo``:
    seconds and tens of MiB) before any clock or memory baseline: a one-off cost of the
    process, which would otherwise land on whichever method builds its optimiser first."""
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def run_method(
    method: str, backbone: str, dataset: Any, seed: int, max_epochs: int | None
) -> Record:
    """Train one method on ``dataset = (A, X, y, split)`` and measure it (`train_pyg`,
    `train_skvqgnn`); the recipe (`recipe`) and the environment are recorded with it."""
    import torch

    settings = recipe(max_epochs)
    train = train_pyg if method in PYG_METHODS else train_skvqgnn
    _warm_up()
    measured = train(method, backbone, dataset, seed, settings)
    A = dataset[0]
    return {
        "n_nodes": int(A.shape[0]),
        "n_edges": int(A.nnz // 2),
        "recipe": settings,
        "max_epochs": settings["max_epochs"],
        **measured,
        "gpu_peak_mib": None,
        "device": DEVICE,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def run_fit(spec: Record) -> Record:
    """Load the dataset of ``spec`` as `_common.load_dataset` does (twitch-en: the stratified
    60/20/20 split of the seed) and run its method; runs inside the worker process."""
    from skvqgnn.datasets import random_split

    A, X, y, split = load_dataset(spec["dataset"], Path(spec["data_dir"]))
    if split is None:
        split = random_split(y, 0.6, 0.2, random_state=spec["seed"])
    measured = run_method(
        spec["mode"], spec["backbone"], (A, X, y, split), spec["seed"], spec["max_epochs"]
    )
    return {**spec, **measured}


def _summary(record: Record) -> str:
    return (
        f"{record['dataset']} {record['backbone']} {record['mode']} seed {record['seed']}: "
        f"test {record['test_acc']:.3f}, epoch {record['epoch_time_s']:.3f} s, training "
        f"{record['train_time_s']:.1f} s, inference {record['inference_time_s']:.3f} s, "
        f"peak RSS +{record['rss_increase_mib']:.0f} MiB"
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def target_accuracy(records: list[Record], dataset: str, backbone: str) -> float | None:
    """The accuracy to reach: mean final test accuracy of PyG full-graph training over its
    runs on ``dataset`` with ``backbone``, minus one point; ``None`` without such runs."""
    full = [
        r
        for r in records
        if (r["dataset"], r["backbone"], r["mode"]) == (dataset, backbone, "pyg-full")
    ]
    reference = mean_of(full, "test_acc")
    return None if reference is None else reference - BAR_POINTS / 100


def time_to_reach(record: Record, target: float) -> tuple[float, int] | None:
    """Training time (setup included) and epoch (1-based) at the first epoch whose test
    accuracy reaches ``target``; ``None`` if none does."""
    for epoch, (seconds, acc) in enumerate(
        zip(record["curve_time_s"], record["curve_test_acc"], strict=True), 1
    ):
        if acc >= target - TOLERANCE:
            return seconds, epoch
    return None


def reach_cell(runs: list[Record], target: float | None) -> str:
    """Table cell: median over the runs of the time to reach ``target`` (a run that never
    does counts as infinitely slow) and its median epoch; *not reached* when the median run
    does not reach it; the count of runs that do when some do not."""
    if target is None:
        return "n/a"
    reached = [time_to_reach(r, target) for r in runs]
    hits = [r for r in reached if r is not None]
    count = "" if len(hits) == len(runs) else f" ({len(hits)}/{len(runs)} runs)"
    seconds = statistics.median(math.inf if r is None else r[0] for r in reached)
    if math.isinf(seconds):
        return f"not reached{count}"
    epoch = statistics.median(math.inf if r is None else r[1] for r in reached)
    return f"{seconds:.1f} (epoch {epoch:g}){count}"


def _median(runs: list[Record], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _batch_cell(runs: list[Record]) -> str:
    batch = runs[0]["batch_size"]
    return "all" if batch is None else str(batch)


TABLE_HEADER = [
    "backbone",
    "method",
    "batch (nodes)",
    "test acc",
    "val acc",
    "Δ test vs PyG full (points)",
    "setup (s)",
    "epoch time (s)",
    "time to PyG full − 1 point (s)",
    "peak RSS increase (MiB)",
    "inference (s)",
]


def dataset_table(records: list[Record], dataset: str, backbones: list[str]) -> list[str]:
    """Markdown table of a dataset: a row per backbone and method that has runs."""
    lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
    for backbone in backbones:
        target = target_accuracy(records, dataset, backbone)
        reference = None if target is None else target + BAR_POINTS / 100
        for method, label in METHOD_LABELS.items():
            runs = _runs(records, dataset, backbone, method)
            if not runs:
                continue
            acc = mean_of(runs, "test_acc")
            if method == "pyg-full":
                delta = "(reference)"
            elif reference is None:
                delta = "n/a"
            else:
                delta = f"{100 * (acc - reference):+.1f}"
            cells = [
                backbone,
                label,
                _batch_cell(runs),
                mean_std([r["test_acc"] for r in runs]),
                mean_std([r["val_acc"] for r in runs]),
                delta,
                f"{_median(runs, 'setup_time_s'):.2f}",
                f"{_median(runs, 'epoch_time_s'):.3f}",
                reach_cell(runs, target),
                f"{_median(runs, 'rss_increase_mib'):.0f}",
                f"{_median(runs, 'inference_time_s'):.3f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _runs(records: list[Record], dataset: str, backbone: str, method: str) -> list[Record]:
    return [
        r
        for r in records
        if (r["dataset"], r["backbone"], r["mode"]) == (dataset, backbone, method)
    ]


def _ratio(numerator: list[Record], denominator: list[Record], key: str, other: str = "") -> str:
    if not numerator or not denominator:
        return "–"
    return f"{_median(numerator, key) / _median(denominator, other or key):.2f}"


RATIO_HEADER = [
    "backbone",
    "epoch time: VQ / PyG full",
    "epoch time: VQ / Cluster-GCN",
    "epoch time: VQ / skvqgnn full",
    "inference: VQ / exact",
    "VQ and exact predictions agree",
    "test acc, exact inference of the VQ model",
]


def ratio_table(records: list[Record], dataset: str, backbones: list[str]) -> list[str]:
    """Ratios of medians over the runs for a dataset, per backbone, and VQ-GNN's two
    inference modes."""
    lines = ["| " + " | ".join(RATIO_HEADER) + " |", "|" + "---|" * len(RATIO_HEADER)]
    for backbone in backbones:
        vq = _runs(records, dataset, backbone, "vq")
        if not vq:
            continue
        cells = [
            backbone,
            _ratio(vq, _runs(records, dataset, backbone, "pyg-full"), "epoch_time_s"),
            _ratio(vq, _runs(records, dataset, backbone, "cluster-gcn"), "epoch_time_s"),
            _ratio(vq, _runs(records, dataset, backbone, "full"), "epoch_time_s"),
            _ratio(vq, vq, "inference_time_s", "exact_time_s"),
            mean_std([r["agreement"] for r in vq]),
            mean_std([r["exact_test_acc"] for r in vq]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def chosen_vq_method(records: list[Record], dataset: str, backbone: str) -> str | None:
    """The VQ-GNN method of a dataset and backbone with the best mean validation accuracy
    (the default ``"vq"`` on a tie); ``None`` without VQ-GNN runs."""
    candidates = [(m, _runs(records, dataset, backbone, m)) for m in VQ_METHODS]
    return best_on_validation(candidates, "val_acc")


def _bars(records: list[Record], datasets: list[str], backbones: list[str]) -> list[str]:
    lines = ["| bar | VQ-GNN row | measured | threshold | result |", "|---|---|---|---|---|"]
    for dataset in datasets:
        for backbone in backbones:
            method = chosen_vq_method(records, dataset, backbone)
            vq = mean_of(_runs(records, dataset, backbone, method), "test_acc") if method else None
            pyg = mean_of(_runs(records, dataset, backbone, "pyg-full"), "test_acc")
            bar = f"{dataset} / {backbone}: VQ-GNN ≥ PyG full graph − {BAR_POINTS:g} point"
            label = METHOD_LABELS[method] if method else "none"
            lines.append(bar_row(bar, vq, pyg, row=label))
    return lines


def render(meta: Record, records: list[Record], regenerated: str | None = None) -> str:
    """The page's generated region: provenance, one table per dataset with its ratios, and the
    bars."""
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in records)]
    backbones = [b for b in PEER_BACKBONES if any(r["backbone"] == b for r in records)]
    lines = [*provenance_lines(meta, records, regenerated, "VQGNNClassifier"), ""]
    for dataset in datasets:
        runs = [r for r in records if r["dataset"] == dataset]
        lines += [
            f"### {dataset} ({runs[0]['n_nodes']} nodes, {runs[0]['n_edges']} edges)",
            "",
            *dataset_table(records, dataset, backbones),
            "",
            "Ratios of medians, and VQ-GNN's inference modes:",
            "",
            *ratio_table(records, dataset, backbones),
            "",
        ]
    lines += ["### Bars", "", *_bars(records, datasets, backbones)]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or one worker run, or regenerate from saved records) and write the
    generated region of the page."""
    args = parse_args(
        argv,
        __doc__.split("\n\n")[0],
        out=page_for(__file__),
        modes=tuple(METHOD_LABELS),
        modes_help="methods, default: all five",
        backbones=PEER_BACKBONES,
        backbone_choices=PEER_BACKBONES,
    )
    run_script(args, __file__, lambda dataset: tuple(METHOD_LABELS), run_fit, _summary, render)


if __name__ == "__main__":
    main()
