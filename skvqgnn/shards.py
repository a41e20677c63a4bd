"""Graphs split across processes: each rank reads only its own part of the graph.

When a graph does not fit one machine, ``write_shards`` partitions it once (on a machine where
it does fit, or in pieces, as its files show) into one folder per rank, and every rank of a
data-parallel fit loads its own folder with ``load_shard``: the rows of the convolution
matrices and the features of its own nodes, never the rest. What a rank needs of the other
nodes is what VQ-GNN already gives it: their codewords, through the assignment table of every
node (a few small integers per node), which every rank keeps whole.

The partition relabels the nodes so that rank ``r`` owns the consecutive ids
``offsets[r] .. offsets[r + 1] - 1`` (METIS parts by default, so that most edges stay inside a
rank and fewer messages go through codewords); ``nodes.npy`` maps them back. The folder::

    partition.json         format, version, n_nodes, n_features, n_parts, offsets, backbone,
                           convolutions (kind, symmetric), classes, fingerprint
    nodes.npy              int64 (n_nodes,): the original id of every new id
    rank{r}/features.npy   float32 (n_r, n_features), the rank's rows of X (memory-mapped on
                           load); features.npz when X is sparse (scipy CSR)
    rank{r}/conv{s}.npz    scipy CSR (n_r, n_nodes): the rank's rows of the fixed convolution
                           ``s`` (row i: the weights of the messages node offsets[r] + i
                           receives), columns in new ids
    rank{r}/conv{s}_transposed.npz   the rank's rows of its transpose (the receivers of each
                           node, for the backward messages); absent when it is symmetric
    rank{r}/conv{s}_inputs.npy       float32 (n_r, n_features): the first layer's input
                           ``(C X)`` of the rank's nodes (.npz when sparse), computed once from
                           the whole graph, so that no rank needs its neighbours' features
    rank{r}/labels.npy     int64 (n_r,): class indices into ``classes``, -1 unlabelled
    rank{r}/predictions.npy           written by ``write_predictions`` after a fit

A partition is written for one backbone (its convolutions and the first layer's inputs);
backbones of fixed convolutions only (``gcn``, ``sage``, ``gin``, ``gcnii`` and custom ones
built from ``Fixed``, ``Identity`` and ``Initial``): attention reads raw features of its
out-of-batch senders, which a rank does not hold.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .convolutions import (
    Fixed,
    Identity,
    Initial,
    _aggregate,
    as_convolution,
    input_rows,
)
from .graph import Graph
from .layers import Backbone, make_backbone
from .samplers import PARTITIONERS, NodeSampler, partition
from .sketch import split_batch_edges

__all__ = [
    "GraphShard",
    "ShardSampler",
    "load_shard",
    "read_predictions",
    "write_predictions",
    "write_shards",
]

FORMAT, VERSION = "skvqgnn-shards", 1
# bytes per process and round of `Sharing.gather` (a module attribute, so a test can make the
# rounds many)
GATHER_BYTES = 1 << 22


# -- writing ---------------------------------------------------------------------------------------
def write_shards(
    folder: str | os.PathLike,
    A: Any,
    X: Any,
    n_parts: int,
    *,
    y: Any = None,
    backbone: str | Backbone = "gcn",
    partitioner: str = "metis",
    random_state: int = 0,
) -> Path:
    """Partition a graph into ``n_parts`` per-rank folders for a partitioned fit.

    Parameters
    ----------
    folder : path
        Created (it must not hold a partition already); the format is in the module's
        docstring.
    A : sparse matrix or any adjacency ``Graph`` accepts, shape (n_nodes, n_nodes)
    X : array-like or sparse matrix of shape (n_nodes, n_features)
    n_parts : int
        The number of ranks that will train on it (``torchrun --nproc-per-node``).
    y : array-like of int of shape (n_nodes,), default=None
        Class labels, ``-1`` for unlabelled nodes (encode other labels first, for example
        with ``sklearn.preprocessing.LabelEncoder``); without them the partition is for
        prediction only.
    backbone : str or Backbone, default="gcn"
        The backbone the estimator will use: its convolutions are what the files hold.
    partitioner : {"metis", "label_propagation", "contiguous"}, default="metis"
        How nodes are given to ranks: METIS k-way parts (most edges inside a rank), label
        propagation (less memory than METIS on very large graphs), or ``"contiguous"``:
        consecutive node ids in the given order.
    random_state : int, default=0
        Seeds the partitioner.

    Returns
    -------
    Path
        ``folder``.
    """
    if not isinstance(n_parts, int | np.integer) or n_parts < 1:
        raise ValueError(f"n_parts must be a positive integer, got {n_parts!r}")
    if partitioner not in PARTITIONERS:
        raise ValueError(f"partitioner must be one of {PARTITIONERS}, got {partitioner!r}")
    folder = Path(folder)
    if (folder / "partition.json").exists():
        raise FileExistsError(f"{folder} holds a partition already; write to a new folder")
    graph = Graph(A, X)
    n = graph.n_nodes
    if n_parts > n:
        raise ValueError(f"n_parts={n_parts} exceeds the {n} nodes of the graph")
    network = make_backbone(backbone)
    codes, classes = _encode_labels(y, n)
    part = partition(graph.A, n_parts, random_state, partitioner)
    order = np.argsort(part, kind="stable")  # new id -> original id
    offsets = np.zeros(n_parts + 1, dtype=np.int64)
    np.cumsum(np.bincount(part, minlength=n_parts), out=offsets[1:])
    if np.any(np.diff(offsets) == 0):
        raise ValueError(
            f"the {partitioner} partition left a rank without nodes ({n} nodes, {n_parts} parts)"
        )
    relabelled = Graph._validated(_permuted(graph.A, order), _rows(graph.X, order))
    convolutions = [as_convolution(c) for c in network.convolutions(relabelled.A)]
    described = []
    for conv in convolutions:
        if type(conv) not in (Fixed, Identity, Initial):
            raise ValueError(
                f"backbone {network.name or type(network).__name__!r} has a "
                f"{type(conv).__name__} convolution: a partitioned fit supports fixed "
                "convolutions only (gcn, sage, gin, gcnii), since attention reads the raw "
                "features of out-of-batch senders, which a rank does not hold"
            )
        entry: dict[str, Any] = {"kind": conv.name}
        if isinstance(conv, Fixed):
            entry["symmetric"] = conv.is_symmetric()
        described.append(entry)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "nodes.npy", order.astype(np.int64))
    for r in range(n_parts):
        lo, hi = int(offsets[r]), int(offsets[r + 1])
        rank = folder / f"rank{r}"
        rank.mkdir(exist_ok=True)
        _save_matrix(rank / "features", _rows(relabelled.X, np.arange(lo, hi)))
        if codes is not None:
            np.save(rank / "labels.npy", codes[order[lo:hi]])
        for s, (conv, entry) in enumerate(zip(convolutions, described, strict=True)):
            if not isinstance(conv, Fixed):
                continue
            rows = conv.block(lo, hi)
            _save_csr(rank / f"conv{s}.npz", rows)
            if not entry["symmetric"]:
                _save_csr(rank / f"conv{s}_transposed.npz", conv.block(lo, hi, transposed=True))
            _save_matrix(rank / f"conv{s}_inputs", _aggregate(rows, relabelled.X))
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "n_nodes": n,
        "n_features": graph.n_features,
        "n_parts": int(n_parts),
        "offsets": offsets.tolist(),
        "backbone": _backbone_key(network),
        "convolutions": described,
        "classes": None if classes is None else classes.tolist(),
        "partitioner": partitioner,
    }
    h = hashlib.blake2b(digest_size=16)
    h.update(graph.fingerprint.encode())
    h.update(json.dumps(meta, sort_keys=True).encode())
    if codes is not None:
        h.update(np.ascontiguousarray(codes).tobytes())
    meta["fingerprint"] = h.hexdigest()
    (folder / "partition.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def _encode_labels(y: Any, n: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Class indices (n,) into the sorted classes, -1 unlabelled; ``(None, None)`` without y."""
    if y is None:
        return None, None
    labels = np.asarray(y)
    if labels.shape != (n,) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"y must be integer class labels of shape ({n},), -1 for unlabelled nodes; got "
            f"shape {labels.shape} and dtype {labels.dtype} (encode other labels first, for "
            "example with sklearn.preprocessing.LabelEncoder)"
        )
    labelled = labels >= 0
    classes = np.unique(labels[labelled])
    if len(classes) < 2:
        raise ValueError(f"y must contain at least 2 classes, got {classes.tolist()}")
    codes = np.full(n, -1, dtype=np.int64)
    codes[labelled] = np.searchsorted(classes, labels[labelled])
    return codes, classes


def _permuted(A: sp.csr_array, order: np.ndarray) -> sp.csr_array:
    """``A`` with rows and columns in ``order`` (new id i is old id order[i])."""
    new_id = np.empty_like(order)
    new_id[order] = np.arange(len(order))
    rows = A[order]
    out = sp.csr_array((rows.data, new_id[rows.indices], rows.indptr), shape=A.shape)
    out.sort_indices()
    return out


def _rows(M: np.ndarray | sp.csr_array, rows: np.ndarray) -> np.ndarray | sp.csr_array:
    return M[rows] if sp.issparse(M) else np.ascontiguousarray(M[rows])


def _save_csr(path: Path, M: sp.csr_array) -> None:
    """``M`` as an uncompressed ``.npz``, its index arrays in the narrowest type SciPy loads
    them in (int32 where they fit), so that loading does not convert them (a second copy)."""
    M = sp.csr_matrix(M)
    fits = max(M.shape[1], M.nnz) < np.iinfo(np.int32).max
    if fits:
        M.indices, M.indptr = M.indices.astype(np.int32), M.indptr.astype(np.int32)
    sp.save_npz(path, M, compressed=False)


def _save_matrix(stem: Path, M: np.ndarray | sp.csr_array) -> None:
    if sp.issparse(M):
        _save_csr(stem.with_suffix(".npz"), M)
    else:
        np.save(stem.with_suffix(".npy"), np.ascontiguousarray(M, dtype=np.float32))


def _load_matrix(stem: Path) -> np.ndarray | sp.csr_array:
    if stem.with_suffix(".npy").exists():
        return np.load(stem.with_suffix(".npy"), mmap_mode="r")
    return sp.csr_array(sp.load_npz(stem.with_suffix(".npz")))


def _backbone_key(network: Backbone) -> str:
    """What the estimator's backbone must equal to fit on a partition."""
    return network.name or f"{type(network).__module__}.{type(network).__qualname__}"


# -- reading ---------------------------------------------------------------------------------------
def load_shard(folder: str | os.PathLike, rank: int | str | None = None) -> GraphShard:
    """The part of a partition (``write_shards``) that one rank trains on.

    Parameters
    ----------
    folder : path
    rank : int, "all" or None, default=None
        The part to load. ``None``: this process's rank under ``torchrun`` (its ``RANK``
        variable) or in the initialised ``torch.distributed`` group; every part in one
        process otherwise. ``"all"``: every part, the whole graph in one process (to predict,
        or to reproduce an ``n_parts``-rank fit with ``distributed=Simulated(n_parts)``).

    Returns
    -------
    GraphShard
    """
    folder = Path(folder)
    meta_path = folder / "partition.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{folder} holds no partition (no partition.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(
            f"{meta_path} is not a {FORMAT} partition of version {VERSION} "
            f"(format {meta.get('format')!r}, version {meta.get('version')!r})"
        )
    n_parts = meta["n_parts"]
    if rank is None:
        rank = _process_rank()
    if rank is None or rank == "all":
        ranks = list(range(n_parts))
    elif isinstance(rank, int | np.integer) and 0 <= rank < n_parts:
        ranks = [int(rank)]
    else:
        raise ValueError(f"rank must be None, 'all' or an integer in [0, {n_parts}), got {rank!r}")
    return GraphShard(folder, meta, ranks)


def _process_rank() -> int | None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["RANK"])
    return None


class GraphShard:
    """The nodes of one rank of a partition (or of several, or all), as a fit reads them.

    Pass it where a graph goes: ``clf.fit(shard)`` trains on the partition, this rank on its
    own nodes (``torchrun``: one process per part); ``clf.predict(shard)`` returns the
    predictions of the shard's nodes (``write_predictions`` saves them beside the partition).
    Load one with `load_shard`.

    Parameters
    ----------
    folder : Path
        The partition's folder.
    meta : dict
        Its ``partition.json``.
    ranks : list of int
        The parts to hold: consecutive, in order.

    Attributes
    ----------
    folder : Path
    ranks : list of int
        The parts held (one under ``torchrun``; every one in a single process).
    n_parts : int
    offsets : ndarray of shape (n_parts + 1,)
        Part ``r`` is the new ids ``offsets[r] .. offsets[r + 1] - 1``.
    n_nodes : int
        Nodes of the whole graph.
    n_features : int
    start, stop : int
        The new ids held are ``start .. stop - 1``.
    X : ndarray or csr_array of shape (stop - start, n_features)
        Features of the nodes held (memory-mapped).
    labels : ndarray of shape (stop - start,) or None
        Class indices into ``classes``, -1 unlabelled.
    classes : ndarray or None
    fingerprint : str
        The partition's identity: a model fitted on it recognises it by this.
    """

    def __init__(self, folder: Path, meta: dict[str, Any], ranks: Sequence[int]):
        self.folder, self.meta, self.ranks = folder, meta, list(ranks)
        self.n_parts = meta["n_parts"]
        self.offsets = np.asarray(meta["offsets"], dtype=np.int64)
        self.n_nodes, self.n_features = meta["n_nodes"], meta["n_features"]
        self.start = int(self.offsets[self.ranks[0]])
        self.stop = int(self.offsets[self.ranks[-1] + 1])
        self.fingerprint = meta["fingerprint"]
        self.classes = None if meta["classes"] is None else np.asarray(meta["classes"])
        self.X = self._joined(lambda d: _load_matrix(d / "features"))
        has_labels = (folder / f"rank{self.ranks[0]}" / "labels.npy").exists()
        self.labels = (
            self._joined(lambda d: np.load(d / "labels.npy", mmap_mode="r")) if has_labels else None
        )
        self._cache: dict[Any, Any] = {}

    def _joined(self, load: Any) -> Any:
        parts = [load(self.folder / f"rank{r}") for r in self.ranks]
        if len(parts) == 1:
            return parts[0]
        if sp.issparse(parts[0]):
            return sp.csr_array(sp.vstack(parts, format="csr"))
        return np.concatenate(parts)

    @property
    def nodes(self) -> np.ndarray:
        """The new ids held, ``start .. stop - 1``."""
        return np.arange(self.start, self.stop)

    @property
    def original_nodes(self) -> np.ndarray:
        """The ids the nodes held had in the graph given to ``write_shards``."""
        return np.asarray(np.load(self.folder / "nodes.npy", mmap_mode="r")[self.start : self.stop])

    def cached(self, key: Any, build: Any) -> Any:
        """``build()`` computed once per key (as ``Graph.cached``).

        Parameters
        ----------
        key : hashable
        build : callable
            Called without arguments the first time ``key`` is asked for.
        """
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def graph_data(self, backbone: Backbone) -> ShardData:
        """The convolutions of the nodes held, read from the files.

        Parameters
        ----------
        backbone : Backbone
            The estimator's; it must be the one the partition was written for.
        """
        if _backbone_key(backbone) != self.meta["backbone"]:
            raise ValueError(
                f"the partition in {self.folder} was written for backbone "
                f"{self.meta['backbone']!r}, not {_backbone_key(backbone)!r}: write it again "
                "with write_shards(..., backbone=...) for this backbone"
            )
        return self.cached(("graph_data", self.meta["backbone"]), lambda: ShardData(self))

    def __repr__(self) -> str:
        held = "every part" if len(self.ranks) == self.n_parts else f"parts {self.ranks}"
        return (
            f"GraphShard({str(self.folder)!r}, {held} of {self.n_parts}: nodes {self.start}.."
            f"{self.stop - 1} of {self.n_nodes})"
        )


# -- the convolutions of the rows held -------------------------------------------------------------
class _ShardRows:
    """A convolution whose host arrays hold the rows ``start .. stop - 1`` only: node ids are
    global, rows are read at ``id - start``."""

    start = 0

    def exact_messages(self, layer, source, initial, rows, attention, network, device):
        raise ValueError(
            "exact inference needs every node's representation; a partitioned graph predicts "
            "with inference='vq'"
        )


class ShardIdentity(_ShardRows, Identity):
    """``Identity`` over the features of the rows held."""

    def __init__(self, X: np.ndarray | sp.csr_array, start: int):
        self.inputs, self.start = X, start

    def inputs_of(self, rows: np.ndarray, device: torch.device) -> Tensor:  # noqa: D102
        return input_rows(self.inputs, rows - self.start, device)


class ShardInitial(_ShardRows, Initial):
    """``Initial`` over the features of the rows held."""

    def __init__(self, X: np.ndarray | sp.csr_array, start: int):
        self.inputs, self.start = X, start

    def inputs_of(self, rows: np.ndarray, device: torch.device) -> Tensor:  # noqa: D102
        return input_rows(self.inputs, rows - self.start, device)


class ShardFixed(_ShardRows, Fixed):
    """``Fixed`` over the rows held: their rows of ``C`` and of ``Cᵀ`` (columns: every node)
    and their first-layer inputs ``(C X)``, computed when the partition was written."""

    def __init__(
        self,
        rows: sp.csr_array,
        transposed: sp.csr_array | None,
        inputs: np.ndarray | sp.csr_array,
        start: int,
    ):
        self.matrix, self._rows_t, self.inputs, self.start = rows, transposed, inputs, start

    def split(self, nodes, position, backward, segment=None):  # noqa: D102
        local = nodes - self.start
        edges = split_batch_edges(self.matrix, local, position, segment)
        if not backward:
            return edges, None
        if self._rows_t is None:  # symmetric: the rows are the transposed rows
            return edges, edges
        return edges, split_batch_edges(self._rows_t, local, position, segment)

    def transposed(self) -> sp.csr_array:  # noqa: D102
        return self.matrix if self._rows_t is None else self._rows_t

    def inputs_of(self, rows, device, edges=None) -> Tensor:  # noqa: D102
        return input_rows(self.inputs, rows - self.start, device)


class ShardData:
    """A `GraphData` of the rows a `GraphShard` holds: what batches of its nodes are made of.

    Attributes
    ----------
    graph : GraphShard
    n_nodes : int
        Nodes of the whole graph (node ids are global).
    convolutions : list of Convolution
    kinds : list of type
        The built-in kinds (``Fixed``, ``Identity``, ``Initial``), which the network is built
        from: a network trained on a partition is the network of the whole graph.
    """

    def __init__(self, shard: GraphShard):
        self.graph, self.n_nodes = shard, shard.n_nodes
        self.convolutions: list[Any] = []
        self.kinds: list[type] = []
        for s, entry in enumerate(shard.meta["convolutions"]):
            kind = entry["kind"]
            if kind == Fixed.name:
                rows = shard._joined(lambda d, s=s: _load_csr(d / f"conv{s}.npz"))
                transposed = None
                if not entry["symmetric"]:
                    transposed = shard._joined(
                        lambda d, s=s: _load_csr(d / f"conv{s}_transposed.npz")
                    )
                inputs = shard._joined(lambda d, s=s: _load_matrix(d / f"conv{s}_inputs"))
                conv, base = ShardFixed(rows, transposed, inputs, shard.start), Fixed
            elif kind == Identity.name:
                conv, base = ShardIdentity(shard.X, shard.start), Identity
            else:
                conv, base = ShardInitial(shard.X, shard.start), Initial
            self.convolutions.append(conv)
            self.kinds.append(base)


def _load_csr(path: Path) -> sp.csr_array:
    M = sp.csr_array(sp.load_npz(path))
    M.sort_indices()
    return M


# -- batches ---------------------------------------------------------------------------------------
class ShardSampler(NodeSampler):
    """Batches inside each part: every part has the same number of batches per epoch
    (``ceil(largest part / batch_size)``), so that every step of an ``n_parts``-rank fit has one
    batch per rank.

    Random batches split a part's nodes evenly among them; cluster batches (``blocks`` given)
    join ``parts_per_batch`` random clusters of the part, found by METIS (or label
    propagation) on the edges inside the part, as ``ClusterSampler`` does on a whole graph.
    The epoch's batches come in step order, rank order within a step; the entries of the parts
    this process does not hold are ``None`` (their rank draws them). Each part draws from its
    own generator, seeded by the epoch's draw from the shared one and the part's index, so that
    one process holding every part draws what the ranks draw.

    Parameters
    ----------
    offsets : ndarray of shape (n_parts + 1,)
    batch_size : int
    ranks : list of int
        The parts held.
    blocks : callable, default=None
        ``blocks(r)``: the (n_r, n_r) adjacency inside part ``r`` (its local ids), for cluster
        batches; ``None``: random batches.
    parts_per_batch : int, default=4
        Clusters per batch.
    seed : int, default=0
        Seed of the partitioner.
    partitioner : {"metis", "label_propagation"}, default="metis"
    """

    def __init__(
        self,
        offsets: np.ndarray,
        batch_size: int,
        ranks: Sequence[int],
        blocks: Any = None,
        parts_per_batch: int = 4,
        seed: int = 0,
        partitioner: str = "metis",
    ):
        self.offsets, self.batch_size, self.ranks = np.asarray(offsets), batch_size, list(ranks)
        self.n_nodes = int(self.offsets[-1])
        sizes = np.diff(self.offsets)
        self.n_steps = max(1, -(-int(sizes.max()) // batch_size))
        self.n_batches = self.n_steps * len(sizes)  # per epoch, over every part
        self.parts_per_batch = parts_per_batch if self.n_steps > 1 else 1
        n_clusters = self.n_steps * self.parts_per_batch
        if sizes.min() < n_clusters:
            raise ValueError(
                f"the partition's smallest part ({int(sizes.min())} nodes) cannot fill the "
                f"{self.n_steps} batches of its largest at batch_size={batch_size}: use a "
                "smaller batch_size or a balanced partition"
            )
        self.clusters: dict[int, list[np.ndarray]] | None = None
        if blocks is not None:
            self.clusters = {}
            for r in self.ranks:
                labels = partition(blocks(r), n_clusters, seed, partitioner)
                members = _members(labels, n_clusters)
                self.clusters[r] = [int(self.offsets[r]) + m for m in members]

    def _part_batches(self, r: int, key: int) -> list[np.ndarray]:
        lo, hi = int(self.offsets[r]), int(self.offsets[r + 1])
        rng = np.random.default_rng([key, r])
        if self.clusters is None:
            order = lo + rng.permutation(hi - lo)
            return [np.sort(b) for b in np.array_split(order, self.n_steps)]
        return self._grouped(self.clusters[r], rng.permutation(len(self.clusters[r])))

    def _grouped(self, clusters: list[np.ndarray], order: np.ndarray) -> list[np.ndarray]:
        k = self.parts_per_batch
        return [
            np.sort(np.concatenate([clusters[i] for i in order[s * k : (s + 1) * k]]))
            for s in range(self.n_steps)
        ]

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray | None]:  # noqa: D102
        key = int(rng.integers(2**63 - 1))
        n_parts = len(self.offsets) - 1
        parts: list[list[np.ndarray] | None] = [None] * n_parts
        for r in self.ranks:
            parts[r] = self._part_batches(r, key)
        for step in range(self.n_steps):
            for r in range(n_parts):
                yield None if parts[r] is None else parts[r][step]

    def inference_batches(self) -> Iterator[np.ndarray]:  # noqa: D102
        for r in self.ranks:
            if self.clusters is not None:  # the clusters in order: most edges inside a batch
                yield from self._grouped(self.clusters[r], np.arange(len(self.clusters[r])))
                continue
            lo, hi = int(self.offsets[r]), int(self.offsets[r + 1])
            for start in range(lo, hi, self.batch_size):
                yield np.arange(start, min(start + self.batch_size, hi))


def _members(labels: np.ndarray, n_clusters: int) -> list[np.ndarray]:
    """The nodes of each of ``n_clusters`` clusters; a cluster the partitioner left empty takes
    half of the largest, so that every batch has nodes."""
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_clusters + 1))
    members = [order[bounds[i] : bounds[i + 1]] for i in range(n_clusters)]
    for i in range(n_clusters):
        if len(members[i]) == 0:
            j = max(range(n_clusters), key=lambda c: len(members[c]))
            half = len(members[j]) // 2
            members[i], members[j] = members[j][:half], members[j][half:]
    return members


class Sharing:
    """How the whole-graph passes of a partitioned fit (codebook initialisation and refresh)
    are split: each process runs its own nodes, and the sums and codes are exchanged.

    Parameters
    ----------
    strategy : skvqgnn.distributed.Strategy
    shard : GraphShard
    """

    def __init__(self, strategy: Any, shard: GraphShard):
        self.strategy = strategy
        self.start, self.stop = shard.start, shard.stop
        bounds = strategy.all_gather(np.array([self.start, self.stop], dtype=np.int64))
        self.sizes = [int(b[1] - b[0]) for b in bounds]
        if sum(self.sizes) != shard.n_nodes or [int(b[0]) for b in bounds] != list(
            np.cumsum([0, *self.sizes[:-1]])
        ):
            raise ValueError(
                f"the processes hold the nodes {[b.tolist() for b in bounds]} of the partition's "
                f"{shard.n_nodes}: each must load its own part (load_shard(folder), one process "
                "per part), or one process every part"
            )

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the processes."""
        return self.strategy.all_reduce(tensor)

    def gather(self, array: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The whole ``array`` (n_nodes, ...) from every process's rows of its own nodes
        (the rest of this process's ``array`` is not read), sent as raw bytes, written into
        ``out`` (which may be ``array`` itself) or a new array.

        The rows go in rounds of at most ``GATHER_BYTES`` per process, so that what is in
        flight at once is bounded by the number of processes, not by the graph: a single
        all-gather of every node's codes would hold a second copy of them."""
        out = np.empty_like(array) if out is None else out
        if len(self.sizes) == 1:  # one process holds every node
            if out is not array:
                out[...] = array
            return out
        width = out.itemsize * int(np.prod(out.shape[1:], dtype=np.int64))
        per_round = max(1, GATHER_BYTES // max(1, width))
        offsets = np.cumsum([0, *self.sizes])
        for lo in range(0, max(self.sizes), per_round):
            rows = [min(per_round, max(0, size - lo)) for size in self.sizes]
            end = min(self.stop, self.start + lo + per_round)
            mine = array[min(self.start + lo, end) : end]
            raw = np.ascontiguousarray(mine).view(np.uint8).ravel()
            padded = np.zeros(-(-len(raw) // 8) * 8, dtype=np.uint8)
            padded[: len(raw)] = raw
            lengths = [-(-r * width // 8) for r in rows]
            parts = self.strategy.all_gather(padded.view(np.int64), lengths=lengths)
            for r, part in enumerate(parts):
                if rows[r]:
                    at = int(offsets[r]) + lo
                    received = np.ascontiguousarray(part).view(np.uint8)[: rows[r] * width]
                    out[at : at + rows[r]] = received.view(out.dtype).reshape(
                        rows[r], *out.shape[1:]
                    )
        return out

    def share_codes(self, table: Any, both: bool) -> None:
        """Every process's codes of its own nodes into every process's ``table`` (the feature
        codes; ``both``: the gradient codes take them too), written in place: at the peak the
        table and what the processes sent, no copy of every node's codes besides."""
        self.gather(table.codes, out=table.codes)
        table.replace(table.codes, table.codes if both else table.grad_codes)


# -- predictions -----------------------------------------------------------------------------------
def write_predictions(shard: GraphShard, predictions: Any) -> list[Path]:
    """Save the predictions of the shard's nodes beside its partition, one file per part
    (``rank{r}/predictions.npy``); `read_predictions` assembles them.

    Parameters
    ----------
    shard : GraphShard
    predictions : array-like of shape (stop - start, ...)
        One row per node held, in the shard's order (``clf.predict(shard)``).

    Returns
    -------
    list of Path
        The files written.
    """
    values = np.asarray(predictions)
    if len(values) != shard.stop - shard.start:
        raise ValueError(
            f"predictions has {len(values)} rows, but the shard holds {shard.stop - shard.start} "
            "nodes"
        )
    written = []
    for r in shard.ranks:
        lo, hi = int(shard.offsets[r]) - shard.start, int(shard.offsets[r + 1]) - shard.start
        path = shard.folder / f"rank{r}" / "predictions.npy"
        np.save(path, values[lo:hi])
        written.append(path)
    return written


def read_predictions(folder: str | os.PathLike) -> np.ndarray:
    """Every part's saved predictions, in the node order of the graph given to
    ``write_shards``.

    Parameters
    ----------
    folder : path

    Returns
    -------
    ndarray of shape (n_nodes, ...)
    """
    folder = Path(folder)
    meta = json.loads((folder / "partition.json").read_text())
    parts = []
    for r in range(meta["n_parts"]):
        path = folder / f"rank{r}" / "predictions.npy"
        if not path.exists():
            raise FileNotFoundError(f"part {r} has no predictions yet ({path})")
        parts.append(np.load(path, allow_pickle=False))
    values = np.concatenate(parts)
    out = np.empty_like(values)
    out[np.load(folder / "nodes.npy")] = values
    return out
