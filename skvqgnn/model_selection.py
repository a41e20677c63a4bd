"""Train / validation / test splits of a graph's edges for link prediction.

:func:`edge_split` holds out random edges of a graph as validation and test positives, pairs every
split with sampled non-edges as negatives, and returns the training graph (the input graph without
the held-out edges) that a link predictor passes messages over while it is fitted and evaluated.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state

from .graph import (
    _as_csr_adjacency,
    candidate_edges,
    contains_sorted,
    is_symmetric,
    pair_keys,
    without_pairs,
)

__all__ = ["EdgeSplit", "edge_split"]

_MAX_DRAW = 1 << 22  # node pairs drawn per round of rejection sampling


@dataclass(frozen=True, eq=False, repr=False)
class EdgeSplit:
    """Node pairs to classify as link / no link, and the graph to pass messages over.

    Parameters
    ----------
    pairs : ndarray of shape (n_pairs, 2), dtype int64
        Node pairs ``(u, v)``, the positives first, then the negatives.
    targets : ndarray of shape (n_pairs,), dtype int64
        1 for a positive pair (an edge of the graph), 0 for a negative pair (a non-edge).
    adjacency : scipy.sparse.csr_array of shape (n_nodes, n_nodes), dtype float32
        The message-passing graph: the input graph without its validation and test edges.
    """

    pairs: np.ndarray
    targets: np.ndarray
    adjacency: sp.csr_array

    @property
    def positives(self) -> np.ndarray:
        """The positive pairs, of shape (n_positives, 2)."""
        return self.pairs[self.targets == 1]

    @property
    def negatives(self) -> np.ndarray:
        """The negative pairs, of shape (n_negatives, 2)."""
        return self.pairs[self.targets == 0]

    def __len__(self) -> int:
        return len(self.targets)

    def __repr__(self) -> str:
        n_pos = int(np.count_nonzero(self.targets))
        return (
            f"EdgeSplit(n_positives={n_pos}, n_negatives={len(self) - n_pos}, "
            f"n_nodes={self.adjacency.shape[0]})"
        )


def edge_split(
    A: Any,
    val: float = 0.05,
    test: float = 0.1,
    negative_ratio: float = 1.0,
    undirected: bool | None = None,
    random_state: int | np.random.RandomState | None = None,
) -> tuple[EdgeSplit, EdgeSplit, EdgeSplit]:
    """Split the edges of a graph into train, validation and test sets for link prediction.

    The candidate edges are the nonzero entries ``(u, v)`` of ``A`` with ``u != v`` (directed
    graph) or ``u < v`` (undirected graph, one pair per edge); self-loops are never candidates.
    ``round(val * m)`` and ``round(test * m)`` of the ``m`` candidates, drawn uniformly without
    replacement, become the validation and test positives; the others are the training
    positives. The training graph is ``A`` without the validation and test positives (both
    directions of an undirected edge), every other entry, self-loops included, keeping its
    weight. The same training graph object is returned with all three splits.

    Each split also gets ``round(negative_ratio * n_positives)`` negatives: node pairs
    ``(u, v)``, ``u != v``, that are not edges of ``A`` (neither ``(u, v)`` nor ``(v, u)`` for an
    undirected graph, whose negatives are given as ``u < v``). Negatives are drawn uniformly
    without replacement, so no pair occurs twice within or across the splits.

    Parameters
    ----------
    A : sparse matrix or array-like of shape (n_nodes, n_nodes)
        Adjacency (any scipy sparse format or a dense array) with non-negative finite weights;
        ``A[u, v] != 0`` is an edge (row ``u`` lists the nodes ``u`` receives messages from).
    val : float, default=0.05
        Fraction of the candidate edges held out for validation, in [0, 1).
    test : float, default=0.1
        Fraction of the candidate edges held out for testing, in [0, 1); ``val + test < 1``.
    negative_ratio : float, default=1.0
        Negatives per positive in every split, >= 0.
    undirected : bool or None, default=None
        Treat the graph as undirected. ``None`` detects it: undirected when ``A`` equals
        ``A.T`` (same pattern and weights). ``True`` requires a symmetric ``A``.
    random_state : int, RandomState instance or None, default=None
        Seeds the choice of held-out edges and of negatives; an int gives reproducible splits.

    Returns
    -------
    train, val, test : EdgeSplit
        Pairs and targets of the three splits, all sharing one training ``adjacency``.

    Raises
    ------
    ValueError
        If ``A`` is not a valid adjacency, if ``val``, ``test`` or ``negative_ratio`` is out of
        range, if ``undirected=True`` and ``A`` is not symmetric, or if ``A`` is too dense to
        provide the requested number of negatives.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> ring = sp.eye(10, k=1) + sp.eye(10, k=-9)
    >>> train, val, test = edge_split(ring + ring.T, val=0.2, test=0.2, random_state=0)
    >>> len(train.positives), len(val.positives), len(test.negatives)
    (6, 2, 2)
    >>> train.adjacency.nnz  # the 4 held-out edges are removed in both directions
    12
    >>> val.adjacency is train.adjacency
    True
    """
    A = _as_csr_adjacency(A)
    _check_fraction(val, "val")
    _check_fraction(test, "test")
    if val + test >= 1:
        raise ValueError(f"val + test must be < 1, got val={val!r} and test={test!r}")
    if (
        isinstance(negative_ratio, bool)
        or not isinstance(negative_ratio, numbers.Real)
        or not (np.isfinite(negative_ratio) and negative_ratio >= 0)
    ):
        raise ValueError(f"negative_ratio must be a finite number >= 0, got {negative_ratio!r}")
    symmetric = is_symmetric(A)
    if undirected is None:
        undirected = symmetric
    elif not isinstance(undirected, (bool, np.bool_)):
        raise ValueError(f"undirected must be True, False or None, got {undirected!r}")
    elif undirected and not symmetric:
        raise ValueError(
            "undirected=True but A is not symmetric (A != A.T); symmetrise A (e.g. A.maximum(A.T)) "
            "or pass undirected=False"
        )
    rng = np.random.default_rng(check_random_state(random_state).randint(np.iinfo(np.int32).max))
    n = A.shape[0]
    # Row-major order of a CSR matrix with sorted indices: the keys u * n + v are sorted.
    edge_keys = pair_keys(candidate_edges(A, undirected), n)  # (m,)

    m = len(edge_keys)
    if m == 0:
        raise ValueError(
            "A has no edge other than self-loops: there is nothing to split into train, "
            "validation and test edges"
        )
    n_val, n_test = int(round(val * m)), int(round(test * m))
    held_val, held_test, kept = np.split(rng.permutation(edge_keys), [n_val, n_val + n_test])

    held = np.concatenate([held_val, held_test])
    adjacency = without_pairs(A, np.stack(np.divmod(held, n), axis=1), undirected)

    positives = (kept, held_val, held_test)
    n_negatives = [int(round(negative_ratio * len(keys))) for keys in positives]
    negatives = np.split(
        _sample_non_edges(edge_keys, n, sum(n_negatives), undirected, rng),
        np.cumsum(n_negatives)[:-1],
    )
    return tuple(
        _make_split(pos, neg, n, adjacency) for pos, neg in zip(positives, negatives, strict=True)
    )


def _check_fraction(value: object, name: str) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not (0 <= value < 1)  # also rejects NaN
    ):
        raise ValueError(f"{name} must be a fraction in [0, 1), got {value!r}")


def _sample_non_edges(
    edge_keys: np.ndarray, n: int, size: int, undirected: bool, rng: np.random.Generator
) -> np.ndarray:
    """Draw ``size`` distinct non-edge keys ``u * n + v`` uniformly, in random order.

    ``edge_keys`` are the sorted keys of the candidate edges (``u < v`` when ``undirected``).
    """
    n_pairs = n * (n - 1) // 2 if undirected else n * (n - 1)
    available = n_pairs - len(edge_keys)
    if size > available:
        raise ValueError(
            f"the graph is too dense for the requested negatives: {size} negative pairs are "
            f"needed but only {available} node pairs are not edges; lower negative_ratio"
        )
    if 2 * size > available:
        # Dense graph: rejection would stall, but listing every pair costs at most
        # 2 * size + len(edge_keys) entries here, so pick among all the non-edges.
        if undirected:
            u, v = np.triu_indices(n, 1)
        else:
            u, v = np.divmod(np.arange(n * n, dtype=np.int64), n)
        keys = (u * n + v)[u != v]
        return rng.permutation(keys[~contains_sorted(edge_keys, keys)])[:size]

    # Rejection sampling: draw pairs, drop self-pairs, edges and repeats. The distinct keys in
    # order of first appearance are a uniformly random sequence of non-edges.
    taken = np.empty(0, dtype=np.int64)
    while len(taken) < size:
        # Fraction of the n * n draws that give a new non-edge (each u < v pair is hit twice).
        accept = (available - len(taken)) * (2 if undirected else 1) / (n * n)
        n_draw = min(_MAX_DRAW, math.ceil(1.2 * (size - len(taken)) / accept) + 16)
        u, v = rng.integers(0, n, n_draw), rng.integers(0, n, n_draw)
        if undirected:
            u, v = np.minimum(u, v), np.maximum(u, v)
        keys = (u * n + v)[u != v]
        taken = np.concatenate([taken, keys[~contains_sorted(edge_keys, keys)]])
        _, first = np.unique(taken, return_index=True)
        taken = taken[np.sort(first)][:size]
    return taken


def _make_split(
    positives: np.ndarray, negatives: np.ndarray, n: int, adjacency: sp.csr_array
) -> EdgeSplit:
    keys = np.concatenate([positives, negatives])
    pairs = np.stack(np.divmod(keys, n), axis=1).astype(np.int64)  # (n_pairs, 2)
    targets = np.concatenate(
        [np.ones(len(positives), dtype=np.int64), np.zeros(len(negatives), dtype=np.int64)]
    )
    return EdgeSplit(pairs=pairs, targets=targets, adjacency=adjacency)
