"""Node-classification datasets: offline loaders and a synthetic graph generator.

Every loader returns a :class:`NodeDataset` ``(A, X, y, split)`` with a symmetric binary
adjacency matrix in CSR format, a feature matrix, integer labels (``-1`` where unknown) and,
when the source defines one, a train/validation/test :class:`NodeSplit`.

Nothing here downloads anything: the loaders read files that are already on disk (Cora is
bundled with the package), and :func:`make_csbm` generates graphs of any size.
"""

from __future__ import annotations

import csv
import numbers
import os
import pickle
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

import numpy as np
from scipy import sparse

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "NodeDataset",
    "NodeSplit",
    "load_cora",
    "load_edge_list_csv",
    "load_ogb_node",
    "load_planetoid",
    "make_csbm",
    "random_split",
]


@dataclass(frozen=True, eq=False)
class NodeSplit:
    """Boolean train / validation / test masks over the nodes of a graph.

    Parameters
    ----------
    train_mask, val_mask, test_mask : ndarray of shape (n_nodes,), dtype bool
        Pairwise disjoint node masks. Nodes in none of them (for instance nodes without a
        label) are simply not used for training or evaluation.

    Raises
    ------
    ValueError
        If a mask is not a one-dimensional boolean array, if the masks differ in length or if
        two masks share a node.
    """

    train_mask: np.ndarray
    val_mask: np.ndarray
    test_mask: np.ndarray

    def __post_init__(self) -> None:
        masks = (self.train_mask, self.val_mask, self.test_mask)
        for mask in masks:
            if not isinstance(mask, np.ndarray) or mask.dtype != bool or mask.ndim != 1:
                raise ValueError("masks must be one-dimensional boolean numpy arrays")
        if len({mask.shape for mask in masks}) != 1:
            raise ValueError("train_mask, val_mask and test_mask must have the same length")
        if np.sum(masks, axis=0, dtype=np.uint8).max(initial=0) > 1:
            raise ValueError("train_mask, val_mask and test_mask must be disjoint")

    @property
    def train_idx(self) -> np.ndarray:
        """Sorted indices of the training nodes."""
        return np.flatnonzero(self.train_mask)

    @property
    def val_idx(self) -> np.ndarray:
        """Sorted indices of the validation nodes."""
        return np.flatnonzero(self.val_mask)

    @property
    def test_idx(self) -> np.ndarray:
        """Sorted indices of the test nodes."""
        return np.flatnonzero(self.test_mask)


class NodeDataset(NamedTuple):
    """A node-classification dataset; unpacks as ``A, X, y, split = dataset``.

    Parameters
    ----------
    A : scipy.sparse.csr_array of shape (n_nodes, n_nodes), dtype float32
        Symmetric adjacency matrix with entries 0/1, no self-loops, no duplicate entries and
        sorted column indices.
    X : scipy.sparse.csr_array or ndarray of shape (n_nodes, n_features), dtype float32
        Node features; sparse when the source stores them sparsely.
    y : ndarray of shape (n_nodes,), dtype int64
        Class labels, ``-1`` where the label is unknown.
    split : NodeSplit or None
        The split defined by the source, or ``None`` when it defines none.
    """

    A: sparse.csr_array
    X: sparse.csr_array | np.ndarray
    y: np.ndarray
    split: NodeSplit | None


def _symmetric_adjacency(row: np.ndarray, col: np.ndarray, n_nodes: int) -> sparse.csr_array:
    """Build the symmetric 0/1 adjacency of the undirected graph with edges ``(row, col)``.

    Self-loops are dropped and repeated edges (in either direction) are merged.
    """
    row = np.asarray(row, dtype=np.int64)
    col = np.asarray(col, dtype=np.int64)
    keep = row != col
    lo = np.minimum(row[keep], col[keep])
    hi = np.maximum(row[keep], col[keep])
    keys = np.sort(lo * n_nodes + hi)
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
    lo, hi = np.divmod(keys, n_nodes)
    index_dtype = np.int32 if n_nodes <= np.iinfo(np.int32).max else np.int64
    rows = np.concatenate([lo, hi], dtype=index_dtype)
    cols = np.concatenate([hi, lo], dtype=index_dtype)
    ones = np.ones(rows.size, dtype=np.float32)
    # Built from coordinates, a CSR array comes out with sorted indices and no duplicates.
    return sparse.csr_array((ones, (rows, cols)), shape=(n_nodes, n_nodes))


def _split_from_indices(
    n_nodes: int, train: np.ndarray, val: np.ndarray, test: np.ndarray
) -> NodeSplit:
    """Turn three index arrays into a :class:`NodeSplit` over ``n_nodes`` nodes."""
    masks = []
    for index in (train, val, test):
        mask = np.zeros(n_nodes, dtype=bool)
        mask[index] = True
        masks.append(mask)
    return NodeSplit(*masks)


# --------------------------------------------------------------------------------------------
# Planetoid (Cora, CiteSeer, PubMed)
# --------------------------------------------------------------------------------------------

_PLANETOID_GLOBALS = {
    ("collections", "defaultdict"),
    ("__builtin__", "list"),
    ("__builtin__", "dict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}
_SPARSE_CLASSES = {"csr_matrix", "csc_matrix", "coo_matrix", "lil_matrix"}


class _PlanetoidUnpickler(pickle.Unpickler):
    """Unpickler for the Planetoid files that refuses anything but arrays and containers.

    The files are Python 2 pickles of SciPy sparse matrices, NumPy arrays and a
    ``defaultdict`` of lists. Allowing only those classes keeps a tampered file from running
    code, and sparse classes are looked up in :mod:`scipy.sparse` itself because the
    ``scipy.sparse.csr``-style modules the files name are deprecated.
    """

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("scipy.sparse") and name in _SPARSE_CLASSES:
            return getattr(sparse, name)
        if (module, name) in _PLANETOID_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"Planetoid files may not reference {module}.{name}")


def _unpickle(file: BinaryIO) -> object:
    return _PlanetoidUnpickler(file, encoding="latin1").load()


def _one_hot_to_labels(one_hot: np.ndarray) -> np.ndarray:
    """Class index of each one-hot row, ``-1`` for all-zero rows."""
    one_hot = np.asarray(one_hot)
    return np.where(one_hot.any(axis=1), one_hot.argmax(axis=1), -1).astype(np.int64)


def _read_planetoid(directory: Path | Traversable, name: str) -> NodeDataset:
    """Assemble a Planetoid dataset from the ``ind.{name}.*`` files in ``directory``."""
    parts = {}
    for part in ("y", "allx", "ally", "tx", "ty", "graph"):
        with (directory / f"ind.{name}.{part}").open("rb") as file:
            parts[part] = _unpickle(file)
    with (directory / f"ind.{name}.test.index").open("rb") as file:
        test_index = np.array(file.read().split(), dtype=np.int64)

    graph = parts["graph"]
    source = np.repeat(
        np.fromiter(graph.keys(), dtype=np.int64, count=len(graph)),
        [len(neighbours) for neighbours in graph.values()],
    )
    target = np.fromiter(
        (node for neighbours in graph.values() for node in neighbours), dtype=np.int64
    )
    n_labelled = parts["allx"].shape[0]
    n_nodes = int(max(n_labelled, test_index.max() + 1, source.max() + 1, target.max() + 1))
    if test_index.min() < n_labelled or np.unique(test_index).size != test_index.size:
        raise ValueError(
            f"ind.{name}.test.index must list distinct nodes after the {n_labelled} rows of allx"
        )

    # Row i of tx/ty belongs to the i-th node listed in test.index. Nodes that are neither in
    # allx nor in test.index (15 CiteSeer nodes) keep zero features and label -1.
    position = np.concatenate([np.arange(n_labelled), test_index])
    stacked = sparse.vstack([parts["allx"], parts["tx"]], format="coo")
    X = sparse.csr_array(
        (stacked.data.astype(np.float32), (position[stacked.row], stacked.col)),
        shape=(n_nodes, stacked.shape[1]),
    )
    y = np.full(n_nodes, -1, dtype=np.int64)
    y[position] = _one_hot_to_labels(np.vstack([parts["ally"], parts["ty"]]))

    n_train = len(parts["y"])
    split = _split_from_indices(
        n_nodes, np.arange(n_train), np.arange(n_train, n_train + 500), test_index
    )
    return NodeDataset(_symmetric_adjacency(source, target, n_nodes), X, y, split)


def load_planetoid(root: str | os.PathLike, name: str) -> NodeDataset:
    """Load a Planetoid citation graph (Cora, CiteSeer, PubMed) from its raw files.

    Parameters
    ----------
    root : str or path-like
        Directory holding the raw files ``ind.{name}.{y,tx,ty,allx,ally,graph,test.index}``
        exactly as published with the Planetoid paper (Yang et al., 2016); ``ind.{name}.x``,
        the first rows of ``allx``, is not needed.
    name : str
        Dataset name used in the file names, e.g. ``"cora"`` or ``"citeseer"``.

    Returns
    -------
    NodeDataset
        ``X`` is a sparse float32 matrix. The split is the public one: the first
        ``len(ind.{name}.y)`` nodes (20 per class) for training, the next 500 for validation and
        the nodes listed in ``test.index`` for test. Nodes absent from both ``allx`` and
        ``test.index`` (15 CiteSeer nodes) get zero features, label ``-1`` and belong to no
        mask.

    Raises
    ------
    FileNotFoundError
        If one of the raw files is missing.
    pickle.UnpicklingError
        If a file references anything other than arrays, sparse matrices and containers.

    Examples
    --------
    >>> A, X, y, split = load_planetoid("data/citeseer", "citeseer")  # doctest: +SKIP
    """
    return _read_planetoid(Path(root), name)


def load_cora() -> NodeDataset:
    """Load the Cora citation graph bundled with the package (no download, works offline).

    Returns
    -------
    NodeDataset
        2708 nodes, 5278 undirected edges, 1433 binary bag-of-words features (sparse),
        7 classes and the public split (140 train / 500 validation / 1000 test nodes).
        See :func:`load_planetoid`.

    Examples
    --------
    >>> A, X, y, split = load_cora()
    >>> A.shape, X.shape, int(split.train_mask.sum())
    ((2708, 2708), (2708, 1433), 140)
    """
    return _read_planetoid(resources.files("skvqgnn.data") / "cora", "cora")


# --------------------------------------------------------------------------------------------
# Edge list + feature triplets in CSV files (Twitch, Deezer, ... from the MUSAE release)
# --------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Read a comma-separated numeric file with a header row into a 2-D float64 array; a file
    that is empty, has no data row, or holds a cell that is not a number is a ``ValueError``
    naming the file (and the cell)."""
    with path.open(newline="") as file:
        try:
            header = [column.strip() for column in next(csv.reader(file))]
        except StopIteration:
            raise ValueError(f"{path}: the file is empty (a header row is expected)") from None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # numpy's "no data" warning
                values = np.loadtxt(file, delimiter=",", ndmin=2, dtype=np.float64)
        except ValueError as exc:
            raise ValueError(
                f"{path}: every cell below the header must be a number ({exc}; rows count from "
                "the first line after the header)"
            ) from None
    if values.size == 0:
        raise ValueError(f"{path}: no data row below the header {header}")
    if values.shape[1] < len(header):
        raise ValueError(
            f"{path}: the header names {len(header)} columns, the rows hold {values.shape[1]}"
        )
    return header, values


def _as_ids(values: np.ndarray, path: Path, what: str, n_nodes: int | None = None) -> np.ndarray:
    """Check that ``values`` are non-negative integers (below ``n_nodes`` if given)."""
    ids = values.astype(np.int64)
    if ids.size and (ids.min() < 0 or not np.array_equal(ids, values)):
        raise ValueError(f"{path}: {what} must be non-negative integers")
    if n_nodes is not None and ids.size and ids.max() >= n_nodes:
        raise ValueError(
            f"{path}: {what} must be node ids in 0..{n_nodes - 1} (the ids of the target file),"
            f" found {ids.max()}"
        )
    return ids


def load_edge_list_csv(
    root: str | os.PathLike,
    edges: str = "edges.csv",
    features: str = "features.csv",
    target: str = "target.csv",
) -> NodeDataset:
    """Load a graph stored as an edge list, feature triplets and targets in CSV files.

    This is the layout of the MUSAE social networks (Twitch, Deezer, GitHub, ...). Each file
    starts with a header row.

    Parameters
    ----------
    root : str or path-like
        Directory holding the three files.
    edges : str, default="edges.csv"
        One undirected edge per row in the first two columns (e.g. ``id_1,id_2``).
    features : str, default="features.csv"
        One non-zero feature per row as ``node_id,feature_id,value``. If a ``(node_id,
        feature_id)`` pair appears more than once, its last value is kept.
    target : str, default="target.csv"
        Node id in the first column and the integer label in the column named ``target``; a
        file without such a column must have exactly two columns, the second being the label.

    Returns
    -------
    NodeDataset
        ``X`` is a sparse float32 matrix with ``max(feature_id) + 1`` columns and ``split`` is
        ``None`` (see :func:`random_split`).

    Raises
    ------
    ValueError
        If the node ids of the target file are not exactly ``0, ..., n_nodes - 1``, if an edge
        or a feature refers to another id, or if the target column cannot be found. The message
        names the offending file.

    Examples
    --------
    >>> A, X, y, split = load_edge_list_csv("data/twitch-en")  # doctest: +SKIP
    >>> split = random_split(y, random_state=0)  # doctest: +SKIP
    """
    root = Path(root)
    target_path = root / target
    header, table = _read_csv(target_path)
    if "target" in header:
        label_column = header.index("target")
    elif len(header) == 2:
        label_column = 1
    else:
        raise ValueError(f"{target_path}: no column named 'target' among {header}")
    ids = _as_ids(table[:, 0], target_path, "node ids")
    n_nodes = ids.size
    if not np.array_equal(np.sort(ids), np.arange(n_nodes)):
        hint = ""
        if np.array_equal(np.sort(ids), np.arange(1, n_nodes + 1)):
            hint = "; they look 1-based: number the nodes from 0"
        elif len(np.unique(ids)) < n_nodes:
            hint = f"; {n_nodes - len(np.unique(ids))} ids repeat"
        raise ValueError(
            f"{target_path}: node ids must be 0..{n_nodes - 1}, each exactly once "
            f"({n_nodes} rows, ids from {ids.min()} to {ids.max()}){hint}"
        )
    labels = table[:, label_column]
    if not np.array_equal(labels, np.round(labels)) or labels.min() < -1:
        raise ValueError(
            f"{target_path}: labels (column {header[label_column]!r}) must be integers >= -1 "
            "(-1 = unlabelled)"
        )
    y = np.empty(n_nodes, dtype=np.int64)
    y[ids] = labels.astype(np.int64)

    edges_path = root / edges
    edge_table = _read_csv(edges_path)[1]
    edge_ids = _as_ids(edge_table[:, :2], edges_path, "node ids", n_nodes)
    A = _symmetric_adjacency(edge_ids[:, 0], edge_ids[:, 1], n_nodes)

    features_path = root / features
    triplets = _read_csv(features_path)[1]
    node = _as_ids(triplets[:, 0], features_path, "node ids", n_nodes)
    feature = _as_ids(triplets[:, 1], features_path, "feature ids")
    n_features = int(feature.max(initial=-1)) + 1
    # Keep the last occurrence of each (node, feature) pair instead of summing duplicates.
    keys = (node * n_features + feature)[::-1]
    last = triplets.shape[0] - 1 - np.unique(keys, return_index=True)[1]
    X = sparse.csr_array(
        (triplets[last, 2].astype(np.float32), (node[last], feature[last])),
        shape=(n_nodes, n_features),
    )
    return NodeDataset(A, X, y, None)


# --------------------------------------------------------------------------------------------
# Open Graph Benchmark
# --------------------------------------------------------------------------------------------


def load_ogb_node(name: str, root: str | os.PathLike) -> NodeDataset:
    """Load an OGB node-property-prediction dataset from an existing on-disk copy.

    The files are read with :class:`ogb.nodeproppred.NodePropPredDataset`, so the folder
    layout is OGB's own: ``root / name.replace("-", "_")`` holding ``RELEASE_v*.txt``,
    ``raw/``, ``split/`` and ``processed/`` (OGB writes its cache there on the first load).
    Nothing is ever downloaded.

    Parameters
    ----------
    name : str
        OGB name of a homogeneous, single-label dataset, e.g. ``"ogbn-arxiv"``,
        ``"ogbn-products"`` or ``"ogbn-papers100M"``.
    root : str or path-like
        Directory that contains the dataset folder (OGB's ``root`` argument).

    Returns
    -------
    NodeDataset
        Dense float32 ``X``; ``y`` is ``-1`` for unlabelled nodes; ``split`` is OGB's
        official split (``get_idx_split()``). Directed edges are symmetrised.

    Raises
    ------
    FileNotFoundError
        If the dataset folder, its release marker or its data files are missing.
    ValueError
        If ``name`` is not an OGB node dataset, or the dataset is heterogeneous, multi-task or
        has no node features.

    Examples
    --------
    >>> A, X, y, split = load_ogb_node("ogbn-arxiv", "data/ogb")  # doctest: +SKIP
    """
    import pandas as pd
    import torch
    from ogb.nodeproppred import NodePropPredDataset

    folder = Path(root) / name.replace("-", "_")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"No copy of {name!r} at {folder}. skvqgnn never downloads datasets: download "
            f"{name} (e.g. with the ogb package on a machine with internet access) and place its "
            f"folder {folder.name!r} inside {Path(root)}."
        )
    master = pd.read_csv(
        resources.files("ogb.nodeproppred") / "master.csv", index_col=0, keep_default_na=False
    )
    if name not in master.columns:
        raise ValueError(f"Unknown OGB node dataset {name!r}; known: {list(master.columns)}")
    meta = master[name]
    if meta["is hetero"] == "True":
        raise ValueError(f"{name} is a heterogeneous graph, which is not supported")
    # Without these files ogb would ask on stdin to delete the folder, or start a download.
    release = folder / f"RELEASE_v{meta['version']}.txt"
    if not release.is_file():
        raise FileNotFoundError(
            f"{release} is missing: the copy at {folder} is incomplete or from another OGB "
            "release; no download is attempted."
        )
    cache = folder / "processed" / "data_processed"
    raw = folder / "raw" / ("data.npz" if meta["binary"] == "True" else "edge.csv.gz")
    if not (cache.is_file() or raw.is_file()):
        raise FileNotFoundError(f"Neither {cache} nor {raw} exists; no download is attempted.")

    class OfflineDataset(NodePropPredDataset):
        def pre_process(self) -> None:
            if not cache.is_file():
                cache.parent.mkdir(exist_ok=True)
                super().pre_process()
                return
            # ogb's cache pickles NumPy arrays (protocol 4), which torch's default weights-only
            # loader rejects. It was written by ogb itself from the raw files in this folder.
            saved = torch.load(cache, weights_only=False)
            self.graph, self.labels = saved["graph"], saved["labels"]

    dataset = OfflineDataset(name, root=str(root))
    graph, labels = dataset[0]
    if graph["node_feat"] is None:
        raise ValueError(f"{name} has no node features")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] != 1:
        raise ValueError(f"{name} has {labels.shape[1]} tasks; only single-label is supported")
    labels = labels.reshape(-1)
    n_nodes = int(graph["num_nodes"])
    y = np.where(np.isnan(labels), -1, labels).astype(np.int64)
    index = dataset.get_idx_split()
    return NodeDataset(
        _symmetric_adjacency(graph["edge_index"][0], graph["edge_index"][1], n_nodes),
        np.asarray(graph["node_feat"], dtype=np.float32),
        y,
        _split_from_indices(n_nodes, index["train"], index["valid"], index["test"]),
    )


# --------------------------------------------------------------------------------------------
# Splits and synthetic graphs
# --------------------------------------------------------------------------------------------


def _check_integer(value: object, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_real(value: object, name: str, low: float, high: float = np.inf) -> None:
    in_range = isinstance(value, numbers.Real) and np.isfinite(value) and low <= value <= high
    if isinstance(value, bool) or not in_range:
        bounds = f"in [{low}, {high}]" if np.isfinite(high) else f"a finite number >= {low}"
        raise ValueError(f"{name} must be {bounds}, got {value!r}")


def random_split(
    y: np.ndarray,
    train_size: float = 0.6,
    val_size: float = 0.2,
    stratify: bool = True,
    random_state: int | np.random.Generator | None = None,
) -> NodeSplit:
    """Randomly split the labelled nodes into train, validation and test sets.

    Parameters
    ----------
    y : array-like of shape (n_nodes,)
        Integer labels, ``-1`` for unlabelled nodes (which go into no set).
    train_size : float, default=0.6
        Fraction of the labelled nodes used for training, in (0, 1].
    val_size : float, default=0.2
        Fraction of the labelled nodes used for validation, in [0, 1). The labelled nodes left
        over after training and validation form the test set.
    stratify : bool, default=True
        Apply the fractions class by class (rounded per class), so that every set has the
        class proportions of the labelled nodes.
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator for :func:`numpy.random.default_rng`.

    Returns
    -------
    NodeSplit
        Disjoint masks covering exactly the labelled nodes.

    Raises
    ------
    ValueError
        If ``y`` is not a 1-D integer array with values >= -1 and at least one labelled node, or
        if the fractions are out of range or sum to more than 1.

    Examples
    --------
    >>> split = random_split(np.array([0, 0, 1, 1, -1]), 0.5, 0.5, random_state=0)
    >>> int(split.train_mask.sum()), int(split.val_mask.sum()), bool(split.train_mask[4])
    (2, 2, False)
    """
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValueError("y must be a one-dimensional integer array")
    if y.size and y.min() < -1:
        raise ValueError("y must contain class labels >= 0, or -1 for unlabelled nodes")
    _check_real(train_size, "train_size", 0.0, 1.0)
    _check_real(val_size, "val_size", 0.0, 1.0)
    if train_size == 0 or train_size + val_size > 1:
        raise ValueError(
            f"need 0 < train_size and train_size + val_size <= 1, got {train_size} and {val_size}"
        )
    rng = np.random.default_rng(random_state)
    nodes = rng.permutation(np.flatnonzero(y >= 0))
    if nodes.size == 0:
        raise ValueError("y has no labelled node (all labels are -1)")

    # Group the shuffled nodes by class; a node's rank in its group decides its set.
    groups = y[nodes] if stratify else np.zeros(nodes.size, dtype=np.int64)
    order = np.argsort(groups, kind="stable")
    nodes = nodes[order]
    _, starts, counts = np.unique(groups[order], return_index=True, return_counts=True)
    rank = np.arange(nodes.size) - np.repeat(starts, counts)
    n_train = np.round(train_size * counts).astype(np.int64)
    n_train_val = n_train + np.minimum(np.round(val_size * counts), counts - n_train)
    n_train, n_train_val = np.repeat(n_train, counts), np.repeat(n_train_val, counts)
    return _split_from_indices(
        y.size,
        nodes[rank < n_train],
        nodes[(rank >= n_train) & (rank < n_train_val)],
        nodes[rank >= n_train_val],
    )


def make_csbm(
    n_nodes: int = 10_000,
    n_classes: int = 5,
    avg_degree: float = 10.0,
    homophily: float = 0.8,
    n_features: int = 64,
    feature_noise: float = 1.0,
    random_state: int | np.random.Generator | None = None,
) -> NodeDataset:
    """Generate a graph from a contextual stochastic block model.

    Labels are balanced and random. ``round(n_nodes * avg_degree / 2)`` undirected edges are
    drawn independently: each joins a uniformly random node to a random node of the same class
    with probability ``homophily``, otherwise to a random node of another (uniformly chosen)
    class. Self-loops are then dropped and repeated edges merged, which lowers the degree
    slightly on small or dense graphs. Each class has a random unit-norm mean vector and
    ``X = mean[y] + feature_noise * N(0, I)``, so classes are well separated for
    ``feature_noise`` well below 1 and overlap strongly above it.

    Generation is vectorised and needs O(n_nodes * (avg_degree + n_features)) memory, so graphs
    with millions of nodes take seconds.

    Parameters
    ----------
    n_nodes : int, default=10_000
        Number of nodes, >= 1.
    n_classes : int, default=5
        Number of classes, between 1 and ``n_nodes``.
    avg_degree : float, default=10.0
        Expected average degree, between 0 and ``n_nodes - 1``.
    homophily : float, default=0.8
        Expected fraction of edges joining nodes of the same class, in [0, 1]; must be 1 when
        ``n_classes`` is 1.
    n_features : int, default=64
        Number of features, >= 1.
    feature_noise : float, default=1.0
        Standard deviation of the Gaussian feature noise, >= 0.
    random_state : int, numpy.random.Generator or None, default=None
        Seed or generator for :func:`numpy.random.default_rng`; a fixed seed gives the same
        dataset every time.

    Returns
    -------
    NodeDataset
        Dense float32 ``X``, and a stratified 60/20/20 :func:`random_split` drawn from the same
        random stream.

    Raises
    ------
    ValueError
        If an argument is out of range; the message names it.

    Examples
    --------
    >>> A, X, y, split = make_csbm(1000, n_classes=4, random_state=0)
    >>> A.shape, X.shape, np.bincount(y).tolist()
    ((1000, 1000), (1000, 64), [250, 250, 250, 250])
    """
    _check_integer(n_nodes, "n_nodes", 1)
    _check_integer(n_classes, "n_classes", 1)
    if n_classes > n_nodes:
        raise ValueError(f"n_classes must be at most n_nodes={n_nodes}, got {n_classes}")
    _check_real(avg_degree, "avg_degree", 0.0, n_nodes - 1.0)
    _check_real(homophily, "homophily", 0.0, 1.0)
    if n_classes == 1 and homophily < 1:
        raise ValueError(f"homophily must be 1 when n_classes is 1, got {homophily}")
    _check_integer(n_features, "n_features", 1)
    _check_real(feature_noise, "feature_noise", 0.0)

    rng = np.random.default_rng(random_state)
    y = rng.permutation(np.arange(n_nodes, dtype=np.int64) % n_classes)
    by_class = np.argsort(y, kind="stable")
    class_size = np.bincount(y, minlength=n_classes)
    class_start = np.cumsum(class_size) - class_size

    n_edges = round(n_nodes * avg_degree / 2)
    source = rng.integers(n_nodes, size=n_edges)
    target_class = y[source]
    other = rng.random(n_edges) >= homophily
    target_class[other] += rng.integers(1, n_classes, size=int(other.sum()))
    target_class %= n_classes
    target = by_class[class_start[target_class] + rng.integers(class_size[target_class])]
    A = _symmetric_adjacency(source, target, n_nodes)
    del source, target, target_class, other

    means = rng.standard_normal((n_classes, n_features))
    means = (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)
    X = rng.standard_normal((n_nodes, n_features), dtype=np.float32)
    X *= np.float32(feature_noise)
    chunk = 1 << 16  # add the means in blocks to avoid a second (n_nodes, n_features) array
    for start in range(0, n_nodes, chunk):
        X[start : start + chunk] += means[y[start : start + chunk]]
    return NodeDataset(A, X, y, random_split(y, 0.6, 0.2, random_state=rng))
