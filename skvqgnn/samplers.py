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

__all__ = ["NodeSampler", "RandomNodeSampler", "ClusterSampler", "metis_partition"]


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
            "failure inside METIS surfaces. sampler='random' needs no partition"
        ) from exc
    return np.asarray(result[1], dtype=np.int64)


class ClusterSampler(NodeSampler):
    """Batches of ``parts_per_batch`` random METIS parts of about ``batch_size / parts_per_batch``.

    Parameters
    ----------
    A : csr_array (n, n)
    batch_size : int
        Target nodes per batch.
    parts_per_batch : int
        Parts joined per batch; several small parts per batch keep batches varied across epochs.
    seed : int
        METIS seed.
    part : ndarray of shape (n_nodes,), default=None
        A partition to use instead of METIS's (a previous sampler's ``part``), when it has as
        many parts as this sampler would make; ``A`` is then not read.
    """

    def __init__(
        self,
        A: sp.csr_array | None,
        batch_size: int,
        parts_per_batch: int = 4,
        seed: int = 0,
        part: np.ndarray | None = None,
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
            part = metis_partition(A, n_parts, seed)
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
