"""Mini-batches of nodes: random node batches and cluster batches (METIS partitions).

Cluster batches (Cluster-GCN style: the graph is cut once into small METIS parts and each batch
joins a few random parts) make most messages intra-batch, so they travel exactly; VQ-GNN then only
approximates the remaining cut edges. Random node batches make about ``(n - b) / n`` of every
node's messages out-of-batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from .graph import is_symmetric

__all__ = [
    "NodeSampler",
    "RandomNodeSampler",
    "ClusterSampler",
    "label_propagation_partition",
    "metis_partition",
]


class NodeSampler:
    """Base: ``epoch(rng)`` yields the training batches, ``inference_batches()`` a fixed cover."""

    n_nodes: int
    batch_size: int

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def inference_batches(self) -> Iterator[np.ndarray]:
        raise NotImplementedError


class RandomNodeSampler(NodeSampler):
    """Uniformly shuffled batches of ``batch_size`` nodes (the last one may be smaller)."""

    def __init__(self, n_nodes: int, batch_size: int):
        self.n_nodes = n_nodes
        self.batch_size = batch_size

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        order = rng.permutation(self.n_nodes)
        for start in range(0, self.n_nodes, self.batch_size):
            yield np.sort(order[start : start + self.batch_size])

    def inference_batches(self) -> Iterator[np.ndarray]:
        for start in range(0, self.n_nodes, self.batch_size):
            yield np.arange(start, min(start + self.batch_size, self.n_nodes))


def metis_partition(A: sp.csr_array, n_parts: int, seed: int) -> np.ndarray:
    """Part id (n,) of every node: METIS k-way partition of the symmetrised structure of ``A``."""
    n = A.shape[0]
    if n_parts <= 1 or n <= 1:
        return np.zeros(n, dtype=np.int64)
    if n_parts >= n:
        return np.arange(n, dtype=np.int64)
    import pymetis

    S = (A + A.T).tocsr()
    S.setdiag(0)
    S.eliminate_zeros()
    S.sort_indices()
    if S.nnz == 0:  # no edges: balanced arbitrary parts
        return np.arange(n, dtype=np.int64) % n_parts
    try:
        result = pymetis.part_graph(
            n_parts,
            pymetis.CSRAdjacency(S.indptr.astype(np.int64), S.indices.astype(np.int64)),
            options=pymetis.Options(seed=int(seed)),
        )
    except RuntimeError as exc:  # pymetis gives no message of its own for METIS's failures
        raise RuntimeError(
            f"METIS could not partition the graph ({n:,} nodes, {S.nnz:,} adjacency entries), "
            f"most likely out of memory: pymetis raised {exc!r}, which is how an allocation "
            "failure inside METIS surfaces. partitioner='label_propagation' needs a fraction "
            "of METIS's memory, and sampler='random' needs no partition"
        ) from exc
    return np.asarray(result[1], dtype=np.int64)


_LP_EDGES = 1 << 22  # adjacency entries label propagation reads at once


def _row_entries(M: sp.csr_array, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(local row, column) of the stored entries of ``M[rows]``, without a sub-matrix."""
    starts = M.indptr[rows].astype(np.int64)
    lengths = M.indptr[rows + 1] - starts
    local = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    pos = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    pos += np.arange(len(pos), dtype=np.int64)
    return local, M.indices[pos]


def _best_labels(
    rows: np.ndarray,
    mats: list[sp.csr_array],
    label: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Per node of ``rows``, the label most of its neighbours carry (ties broken at random, in
    favour of its own label); its own label when it has no neighbour."""
    local, cols = zip(*(_row_entries(M, rows) for M in mats), strict=True)
    local = np.concatenate(local)
    best = label[rows].copy()
    if not len(local):
        return best
    n = len(label)
    keys = local * n + label[np.concatenate(cols)]
    keys, counts = np.unique(keys, return_counts=True)
    who, lab = np.divmod(keys, n)
    score = counts + 0.5 * rng.random(len(counts))
    score[lab == label[rows[who]]] += 0.75  # stay unless a label clearly wins
    # the keys are sorted, so each node's candidates are one segment: its first best score,
    # found without sorting the scores
    starts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
    segment = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(who)]))
    top = np.flatnonzero(score == np.maximum.reduceat(score, starts)[segment])
    first = top[np.r_[True, segment[top][1:] != segment[top][:-1]]]
    best[who[first]] = lab[first]
    return best


def label_propagation_partition(
    A: sp.csr_array, n_parts: int, seed: int, n_rounds: int = 10, symmetric: bool = False
) -> np.ndarray:
    """Part id (n,) of every node from size-capped label propagation, in memory linear in the
    graph and a few sorts of its entries per round.

    Every node starts as its own cluster; in each round the nodes, in four random groups, move
    to the cluster most of their neighbours (in- and out-neighbours) belong to, while it holds
    fewer than ``ceil(n / n_parts)`` nodes. The clusters, in random order, are then cut into
    ``n_parts`` consecutive parts of equal size. It keeps fewer edges inside parts than METIS
    on most graphs, and needs a fraction of its memory: the partitioner for graphs METIS
    cannot hold.

    Parameters
    ----------
    A : csr_array of shape (n, n)
    n_parts : int
    seed : int
    n_rounds : int, default=10
        Rounds at most (fewer once almost no node moves).
    symmetric : bool, default=False
        ``True`` when ``A`` is known to be symmetric (a `Graph`'s cached ``is_symmetric``),
        which spares the check of its pattern, a few passes over its entries; ``False``: the
        pattern is checked.

    Returns
    -------
    ndarray of shape (n,), int32 (int64 from 2³¹ nodes)
    """
    n = A.shape[0]
    ids = np.int32 if n <= np.iinfo(np.int32).max else np.int64  # every array of n in it
    if n_parts <= 1 or n <= 1:
        return np.zeros(n, dtype=ids)
    if n_parts >= n:
        return np.arange(n, dtype=ids)
    A = sp.csr_array(A)
    pattern = sp.csr_array((np.ones(A.nnz, dtype=np.int8), A.indices, A.indptr), shape=A.shape)
    mats = [A] if symmetric or is_symmetric(pattern) else [A, A.T.tocsr()]
    del pattern
    degree = sum(np.diff(M.indptr) for M in mats)
    cap = math.ceil(n / n_parts)
    rng = np.random.default_rng(seed)
    label = np.arange(n, dtype=ids)
    size = np.ones(n, dtype=ids)
    for _ in range(n_rounds):
        moved = 0
        for group in np.array_split(rng.permutation(n), 4):
            group.sort()
            bounds = np.r_[0, np.flatnonzero(np.diff(np.cumsum(degree[group]) // _LP_EDGES)) + 1]
            for start, stop in zip(bounds, np.r_[bounds[1:], len(group)], strict=True):
                rows = group[start:stop]
                best = _best_labels(rows, mats, label, rng)
                movers = np.flatnonzero(best != label[rows])
                if not len(movers):
                    continue
                target = best[movers]
                order = np.argsort(target, kind="stable")
                target, movers = target[order], movers[order]
                first = np.r_[0, np.flatnonzero(np.diff(target)) + 1]
                rank = np.arange(len(target)) - np.repeat(first, np.diff(np.r_[first, len(target)]))
                ok = rank < cap - size[target]
                nodes, target = rows[movers[ok]], target[ok]
                np.subtract.at(size, label[nodes], 1)
                np.add.at(size, target, 1)
                label[nodes] = target
                moved += len(nodes)
        if moved <= n // 1000:
            break
    del size, degree, mats
    # the clusters in random order, then cut into equal parts: the i-th node of that order
    # goes to part i * n_parts // n
    key = rng.permutation(n).astype(ids)[label]
    del label
    order = np.argsort(key, kind="stable")
    del key
    starts = -(-np.arange(n_parts + 1, dtype=np.int64) * n // n_parts)  # ceil(k n / n_parts)
    part = np.empty(n, dtype=ids)
    part[order] = np.repeat(np.arange(n_parts, dtype=ids), np.diff(starts))
    return part


def contiguous_partition(n: int, n_parts: int) -> np.ndarray:
    """Part id (n,) of every node: ``n_parts`` ranges of consecutive node ids, of sizes that
    differ by one at most.

    No time and no memory beyond its result, and the parts are exactly as local as the node
    order: the partitioner for graphs stored with neighbours at nearby ids (a crawl, a
    breadth-first order, the parts of an earlier partition one after the other), and the one
    that keeps a batch's rows of memory-mapped features together on the disk.

    Returns
    -------
    ndarray of shape (n,), int32 (int64 from 2³¹ nodes)
    """
    ids = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    n_parts = max(1, min(n_parts, n))
    # node i goes to part i * n_parts // n: part k starts at ceil(k n / n_parts)
    starts = -(-np.arange(n_parts + 1, dtype=np.int64) * n // n_parts)
    return np.repeat(np.arange(n_parts, dtype=ids), np.diff(starts))


PARTITIONERS = ("metis", "label_propagation", "contiguous")


def partition(
    A: sp.csr_array, n_parts: int, seed: int, partitioner: str = "metis", symmetric: bool = False
) -> np.ndarray:
    """Part id (n,) of every node of ``A`` by the partitioner named, one of `PARTITIONERS`:
    `metis_partition`, `label_propagation_partition` (``symmetric``: ``A`` is known to be
    symmetric) or `contiguous_partition`."""
    if partitioner == "metis":
        return metis_partition(A, n_parts, seed)
    if partitioner == "label_propagation":
        return label_propagation_partition(A, n_parts, seed, symmetric=symmetric)
    if partitioner == "contiguous":
        return contiguous_partition(A.shape[0], n_parts)
    raise ValueError(f"partitioner must be one of {PARTITIONERS}, got {partitioner!r}")


class ClusterSampler(NodeSampler):
    """Batches of ``parts_per_batch`` random graph parts of about ``batch_size / parts_per_batch``.

    Parameters
    ----------
    A : csr_array (n, n)
    batch_size : int
        Target nodes per batch.
    parts_per_batch : int
        Parts joined per batch; several small parts per batch keep batches varied across epochs.
    seed : int
        Seed of the partitioner.
    part : ndarray of shape (n_nodes,), default=None
        A partition to use instead of the partitioner's (a previous sampler's ``part``), when
        it has as many parts as this sampler would make; ``A`` is then not read.
    partitioner : {"metis", "label_propagation", "contiguous"}, default="metis"
        `metis_partition`, `label_propagation_partition` or `contiguous_partition`.
    symmetric : bool, default=False
        ``True`` when ``A`` is known to be symmetric: label propagation skips its check.
    """

    def __init__(
        self,
        A: sp.csr_array | None,
        batch_size: int,
        parts_per_batch: int = 4,
        seed: int = 0,
        part: np.ndarray | None = None,
        partitioner: str = "metis",
        symmetric: bool = False,
    ):
        self.n_nodes = A.shape[0] if A is not None else len(part)
        self.batch_size = batch_size
        n_batches = max(1, math.ceil(self.n_nodes / batch_size))
        self.parts_per_batch = parts_per_batch if n_batches > 1 else 1
        n_parts = n_batches * self.parts_per_batch
        if part is not None and (len(part) != self.n_nodes or int(part.max()) + 1 != n_parts):
            part = None  # a partition for another batch size: partition again
        if part is None:
            if A is None:
                raise ValueError("ClusterSampler needs A when no usable partition is given")
            part = partition(A, n_parts, seed, partitioner, symmetric)
        #: (n,) int32, every node's part: what a fitted estimator keeps to batch its training
        #: graph again without METIS
        self.part = np.asarray(part, dtype=np.int32)
        order = np.argsort(self.part, kind="stable")
        bounds = np.searchsorted(self.part[order], np.arange(n_parts + 1))
        self.parts = [order[bounds[i] : bounds[i + 1]] for i in range(n_parts)]
        self.parts = [p for p in self.parts if len(p)]

    def _group(self, part_order: np.ndarray) -> Iterator[np.ndarray]:
        for start in range(0, len(part_order), self.parts_per_batch):
            chosen = part_order[start : start + self.parts_per_batch]
            yield np.sort(np.concatenate([self.parts[i] for i in chosen]))

    def epoch(self, rng: np.random.Generator) -> Iterator[np.ndarray]:
        return self._group(rng.permutation(len(self.parts)))

    def inference_batches(self) -> Iterator[np.ndarray]:
        return self._group(np.arange(len(self.parts)))
