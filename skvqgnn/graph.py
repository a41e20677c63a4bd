"""Graphs as scikit-learn sees them: a validated ``Graph`` and ``NodeSet`` views over its nodes.

scikit-learn's model selection indexes ``X`` along its first axis and hands ``predict`` nothing but
``X``. A ``NodeSet`` is therefore the "X" of a graph estimator: a 1-D view of some nodes of one
shared, read-only ``Graph``. Indexing a view gives another view of the same graph, so
cross-validation, grid search (with refit) and ``train_test_split`` split nodes, never the graph.
A ``PairSet`` is the same for node pairs (candidate links).
"""

from __future__ import annotations

import hashlib
import numbers
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "Graph",
    "NodeSet",
    "PairSet",
    "attention_mask",
    "gcn_norm",
    "gcn_norm_scales",
    "mean_norm",
]


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_float32_range(values: np.ndarray, name: str, what: str) -> None:
    """Reject NaN, infinities and finite values that float32 cannot hold, each by its name,
    before the conversion to float32 turns the last into infinities."""
    if values.dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported: {name} must hold real numbers, got {values.dtype}"
        )
    if values.dtype.kind != "f" or values.size == 0:
        return
    if not _all_finite(values):
        raise ValueError(f"{name} contains NaN or infinite {what}")
    if values.dtype.itemsize <= 4:
        return  # float32 holds every finite value of its own type and of float16
    largest = max(max(-chunk.min(), chunk.max()) for chunk in _row_chunks(values))
    if largest > _FLOAT32_MAX:
        raise ValueError(
            f"{name} holds {what} up to {largest:.3g}, beyond float32's range "
            f"(±{_FLOAT32_MAX:.3g}); rescale {name}"
        )


_CHECK_VALUES = 1 << 22  # values a check reads at once, so that its temporaries stay small


def _row_chunks(values: np.ndarray) -> Iterator[np.ndarray]:
    """``values`` in chunks of whole rows (of elements for 1-D) of about ``_CHECK_VALUES``."""
    per_row = max(1, values.size // max(1, len(values)))
    step = max(1, _CHECK_VALUES // per_row)
    for start in range(0, len(values), step):
        yield values[start : start + step]


def has_repeats(index: np.ndarray) -> bool:
    """Whether an id appears more than once in ``index`` (1-D integers). Increasing ids (a
    graph's ``nodes()``, a sorted subset) are recognised in one pass over chunks, without the
    sorted copy of every id, and its temporaries, that `numpy.unique` makes (at 10⁸ nodes, 2-3
    GB); any other order is sorted."""
    for start in range(0, max(len(index) - 1, 0), _CHECK_VALUES):
        chunk = index[start : start + _CHECK_VALUES + 1]  # one id of overlap
        if not (chunk[1:] > chunk[:-1]).all():
            return len(np.unique(index)) < len(index)
    return False


def _all_finite(values: np.ndarray) -> bool:
    """Whether every value is finite, read in chunks (no temporary of the array's size)."""
    return all(np.isfinite(chunk).all() for chunk in _row_chunks(values))


def is_pyg_data(A: Any) -> bool:
    """Whether ``A`` looks like a PyTorch Geometric ``Data`` (``edge_index`` and ``x``)."""
    return hasattr(A, "edge_index") and hasattr(A, "x") and not isinstance(A, Graph)


def _is_networkx(A: Any) -> bool:
    return all(hasattr(A, name) for name in ("adj", "nodes", "is_directed", "edges"))


def _is_torch(A: Any) -> bool:
    return type(A).__module__.split(".")[0] == "torch" and hasattr(A, "layout")


def _is_edge_index(A: Any) -> bool:
    """An integer (2, m) array or tensor that is not a square matrix: PyG's ``edge_index``."""
    shape = getattr(A, "shape", None)
    if shape is None or len(shape) != 2 or shape[0] != 2 or shape[1] == 2:
        return False
    dtype = str(getattr(A, "dtype", ""))
    return "int" in dtype and not (_is_torch(A) and A.layout != _torch().strided)


def _torch():
    import torch

    return torch


def _from_edge_index(edge_index: Any, n_nodes: int, weight: Any = None) -> sp.csr_array:
    """PyG's convention: column ``e`` of ``edge_index`` is an edge source → target, so the
    target (row) receives from the source (column)."""
    index = np.asarray(edge_index.cpu() if _is_torch(edge_index) else edge_index)
    if index.size and (index.min() < 0 or index.max() >= n_nodes):
        raise ValueError(
            f"edge_index holds node ids outside [0, {n_nodes}) (min {index.min()}, max "
            f"{index.max()}); the graph has {n_nodes} nodes (rows of X)"
        )
    if weight is None:
        values = np.ones(index.shape[1], dtype=np.float32)
    else:
        values = np.asarray(weight.cpu() if _is_torch(weight) else weight, dtype=np.float64)
        if values.shape != (index.shape[1],):
            raise ValueError(
                f"the edge weights must have shape ({index.shape[1]},), one per column of "
                f"edge_index, got {values.shape}"
            )
    return sp.csr_array(sp.coo_array((values, (index[1], index[0])), shape=(n_nodes, n_nodes)))


def _from_networkx(G: Any) -> sp.csr_array:
    """Rows in ``G.nodes`` order; a directed edge u → v sends messages from u to v (row v),
    an edge's ``weight`` attribute is its weight (1 without one)."""
    import networkx as nx

    M = nx.to_scipy_sparse_array(G, nodelist=list(G.nodes), weight="weight", format="csr")
    return sp.csr_array(M.T if G.is_directed() else M)


def _from_torch(A: Any) -> sp.csr_array | np.ndarray:
    torch = _torch()
    if A.layout == torch.strided:
        return A.detach().cpu().numpy()
    coo = A.detach().cpu().to_sparse_coo().coalesce()
    rows, cols = coo.indices().numpy()
    return sp.csr_array((coo.values().numpy(), (rows, cols)), shape=tuple(coo.shape))


def _usable_in_place(A: Any) -> bool:
    """Whether a sparse ``A`` is what `Graph` would make of it already, and read-only (a CSR
    over memory-mapped files, say): square float32 CSR, canonical (sorted, no duplicates),
    positive finite weights, read-only arrays. Such an adjacency is used in place, as read-only
    features are; any other is converted into a copy."""
    if A.format != "csr" or A.shape[0] != A.shape[1] or A.data.dtype != np.float32:
        return False
    arrays = (A.data, A.indices, A.indptr)
    if any(a.flags.writeable for a in arrays) or A.indices.dtype != A.indptr.dtype:
        return False
    if A.indices.dtype not in (np.int32, np.int64) or not A.has_canonical_format:
        return False
    return all(((chunk > 0) & (chunk < np.inf)).all() for chunk in _row_chunks(A.data))


def _as_csr_adjacency(A: Any, n_nodes: int | None = None) -> sp.csr_array:
    if _is_networkx(A):
        A = _from_networkx(A)
    elif n_nodes is not None and _is_edge_index(A):
        A = _from_edge_index(A, n_nodes)
    elif _is_torch(A):
        A = _from_torch(A)
    if sp.issparse(A):
        if A.ndim != 2:
            raise ValueError(f"A must be 2-D (n_nodes, n_nodes), got a sparse {A.ndim}-D array")
        if _usable_in_place(A):
            return sp.csr_array((A.data, A.indices, A.indptr), shape=A.shape, copy=False)
        A = sp.csr_array(A)  # any format (DOK, LIL, ...) has its values in .data after this
        _check_float32_range(A.data, "A", "edge weights")
        A = sp.csr_array(A, dtype=np.float32, copy=True)
    else:
        try:
            A = np.asarray(A)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(
                f"A must be a scipy sparse matrix or a 2-D array, got {type(A)}"
            ) from exc
        if A.dtype == object:
            raise TypeError(
                f"A must be a scipy sparse matrix or a numeric 2-D array, got {A.dtype}"
            )
        if A.ndim != 2:
            raise ValueError(f"A must be 2-D (n_nodes, n_nodes), got an array of shape {A.shape}")
        _check_float32_range(A, "A", "edge weights")
        A = sp.csr_array(A.astype(np.float32))
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be square (n_nodes, n_nodes), got shape {A.shape}")
    A.sum_duplicates()
    A.sort_indices()
    if not _all_finite(A.data):
        raise ValueError("A contains NaN or infinite edge weights")
    if np.any(A.data < 0):
        raise ValueError("A contains negative edge weights; edge weights must be >= 0")
    A.eliminate_zeros()
    return A


def _as_features(X: Any, n_nodes: int) -> np.ndarray | sp.csr_array:
    if sp.issparse(X):
        X = sp.csr_array(X)
        _check_float32_range(X.data, "X", "values")
        X = sp.csr_array(X, dtype=np.float32, copy=True)
        X.sum_duplicates()
        X.sort_indices()
        values = X.data
    else:
        X = np.asarray(X)
        why = ""
        if X.dtype == object:  # numbers held as objects are numbers
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError) as exc:
                why = f" ({exc})"
        if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise TypeError(f"X must hold numbers (or booleans), got dtype {X.dtype}{why}")
        _check_float32_range(X, "X", "values")
        if X.ndim == 1:
            raise ValueError(
                f"X must be 2-D (n_nodes, n_features), got a 1-D array of shape {X.shape}; "
                "Reshape your data with X.reshape(-1, 1) for a single feature"
            )
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_nodes, n_features), got shape {X.shape}")
        X = np.ascontiguousarray(X, dtype=np.float32)
        values = X
    if X.shape[0] != n_nodes:
        raise ValueError(f"X has {X.shape[0]} rows but A has {n_nodes} nodes; they must match")
    if X.shape[1] < 1:
        raise ValueError(
            f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required: X must have "
            "at least one feature column"
        )
    if not _all_finite(values):
        raise ValueError("X contains NaN or infinite values")
    return X


def gcn_norm(A: sp.csr_array) -> sp.csr_array:
    """GCN convolution ``D̃^-½ (A + I) D̃^-½`` with the remaining self-loops added.

    Nodes that already carry a self-loop keep its weight (as PyTorch Geometric's ``gcn_norm``);
    ``D̃`` holds the row sums of ``A + I``. Row ``i`` aggregates from the columns ``j`` with
    ``A[i, j] != 0``.

    Parameters
    ----------
    A : csr_array of shape (n_nodes, n_nodes)
        Adjacency with non-negative weights.

    Returns
    -------
    csr_array of shape (n_nodes, n_nodes), dtype float32
        The normalised convolution, with sorted indices.
    """
    C = with_unit_self_loops(A)
    inv_sqrt, _ = gcn_norm_scales(A)
    _scale_entries(C, inv_sqrt, inv_sqrt)
    return C


def gcn_norm_scales(A: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """`gcn_norm` as two vectors of n: ``gcn_norm(A) == diag(s) A diag(s) + diag(diagonal)``.

    ``s = d̃^-½`` (``D̃`` the row sums of ``A`` plus the missing self-loops) and ``diagonal``
    the weights of the loops ``A`` lacks, ``1 / d̃_i`` (0 where ``A`` has a loop: its entry
    of ``A``, scaled, is the loop). A fixed convolution built on them
    (``Fixed(A, s, s, diagonal)``) forms ``C``'s entries from ``A``'s when a batch gathers
    them, and stores no matrix of its own.

    Parameters
    ----------
    A : csr_array of shape (n_nodes, n_nodes)
        Adjacency with non-negative weights.

    Returns
    -------
    s, diagonal : ndarray of shape (n_nodes,), dtype float32
    """
    A = canonical_csr(A)
    missing = A.diagonal() == 0  # no loop stored, or a stored zero: a loop of weight 1
    deg = np.asarray(A.sum(axis=1), dtype=np.float64).ravel()
    deg += missing
    s = _inverse_sqrt(deg)
    return s, np.where(missing, s * s, np.float32(0.0)).astype(np.float32)


def _inverse_sqrt(deg: np.ndarray) -> np.ndarray:
    """``deg^-½`` as float32, 0 where ``deg`` is 0."""
    return np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-30)), 0.0).astype(np.float32)


def canonical_csr(A: sp.csr_array) -> sp.csr_array:
    """``A`` as CSR with sorted indices and no duplicates: ``A`` itself when it is a CSR array
    so already (a `Graph`'s ``A`` is), else a copy."""
    if not isinstance(A, sp.csr_array):
        A = sp.csr_array(A)
    if not A.has_canonical_format:
        A = A.copy()
        A.sum_duplicates()
    return A


def _with_values(A: sp.csr_array, data: np.ndarray) -> sp.csr_array:
    """A CSR matrix with ``A``'s pattern, sharing its index arrays, and the values ``data``."""
    M = sp.csr_array((data, A.indices, A.indptr), shape=A.shape, copy=False)
    M.has_canonical_format = A.has_canonical_format
    return M


_SCALE_ENTRIES = 1 << 22  # entries of a CSR matrix rescaled at once (bounds the temporaries)
_LOOP_ENTRIES = 1 << 20  # entries scanned at once for the diagonal (5 bytes each)


def _rows_by_entries(indptr: np.ndarray, step: int | None = None) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` ranges of rows holding about ``step`` (default `_SCALE_ENTRIES`)
    entries each, one row at least."""
    step = _SCALE_ENTRIES if step is None else step
    n, start = len(indptr) - 1, 0
    while start < n:
        stop = int(np.searchsorted(indptr, indptr[start] + step, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        yield start, stop
        start = stop


def with_unit_self_loops(A: sp.csr_array) -> sp.csr_array:
    """``A`` as float32 with sorted indices and a self-loop of weight 1 on every node whose
    diagonal entry is zero (stored or not); other entries keep their weights.

    The loops are inserted into copies of ``A``'s arrays (``np.insert``, with a mask of one
    byte per entry), where the sum ``A + I`` would hold a float32 copy of ``A`` and the sum
    at once; the rows' entries left of the diagonal are counted a chunk of rows at a time."""
    A = sp.csr_array(A)
    if not A.has_sorted_indices:
        A = A.sorted_indices()
    n, indptr, indices = A.shape[0], A.indptr, A.indices
    has_loop = np.zeros(n, dtype=bool)  # a stored diagonal entry, zero or not
    below = np.zeros(n, dtype=indptr.dtype)  # entries left of the diagonal, per row
    for start, stop in _rows_by_entries(indptr, _LOOP_ENTRIES):
        lo, hi = indptr[start], indptr[stop]
        rows = np.repeat(
            np.arange(start, stop, dtype=indices.dtype), np.diff(indptr[start : stop + 1])
        )
        cols = indices[lo:hi]
        below[start:stop] = np.bincount(rows[cols < rows] - start, minlength=stop - start)
        has_loop[rows[cols == rows]] = True
    total = A.nnz + n - int(np.count_nonzero(has_loop))
    index_dtype = np.int32 if total <= np.iinfo(np.int32).max else np.int64
    index_dtype = np.promote_types(indices.dtype, index_dtype)
    new = np.flatnonzero(~has_loop).astype(index_dtype)
    at = indptr[new] + below[new]  # before the row's first entry right of the diagonal
    out_indptr = indptr.astype(index_dtype)
    out_indptr[1:] += np.cumsum(~has_loop, dtype=index_dtype)
    out_indices = np.insert(indices.astype(index_dtype, copy=False), at, new)
    del new
    out_data = np.insert(A.data.astype(np.float32, copy=False), at, np.float32(1.0))
    zero = np.flatnonzero(has_loop & (A.diagonal() == 0))  # a stored zero becomes 1
    out_data[out_indptr[zero] + below[zero]] = 1.0
    return sp.csr_array((out_data, out_indices, out_indptr), shape=A.shape, copy=False)


def _scale_entries(M: sp.csr_array, row: np.ndarray, col: np.ndarray | None = None) -> None:
    """``M[i, j] *= row[i] * col[j]`` (``col=None``: ``M[i, j] *= row[i]``) in place, in
    chunks of rows, so that no temporary the size of ``M`` is made. ``row[i] * col[j]`` is
    formed first: a symmetric ``M`` with ``row == col`` stays exactly symmetric."""
    indptr, indices, data = M.indptr, M.indices, M.data
    for start, stop in _rows_by_entries(indptr):
        lo, hi = indptr[start], indptr[stop]
        rows = np.repeat(row[start:stop], np.diff(indptr[start : stop + 1]))
        if col is not None:
            rows *= col[indices[lo:hi]]
        data[lo:hi] *= rows


def mean_norm(A: sp.csr_array, inverse: np.ndarray | None = None) -> sp.csr_array:
    """Mean aggregation ``D^-1 A`` (GraphSAGE-mean); rows of isolated nodes are zero.

    Parameters
    ----------
    A : csr_array of shape (n_nodes, n_nodes)
        Adjacency with non-negative weights.
    inverse : ndarray of shape (n_nodes,), default=None
        ``inverse_degree(A)``, when the caller has it already.

    Returns
    -------
    csr_array of shape (n_nodes, n_nodes), dtype float32
        ``A`` with each row divided by its sum, with sorted indices. It shares ``A``'s index
        arrays when ``A`` has sorted indices and no duplicates (only the values are new).
    """
    A = canonical_csr(A)
    C = _with_values(A, A.data.astype(np.float32, copy=True))
    _scale_entries(C, inverse_degree(A) if inverse is None else inverse)
    return C


def inverse_degree(A: sp.csr_array) -> np.ndarray:
    """``1 / deg`` (n_nodes,) float32 from the row sums of ``A``, 0 for isolated nodes: the row
    scale of `mean_norm`."""
    deg = np.asarray(A.sum(axis=1), dtype=np.float64).ravel()
    return np.where(deg > 0, 1.0 / np.maximum(deg, 1e-30), 0.0).astype(np.float32)


def attention_mask(A: sp.csr_array) -> sp.csr_array:
    """The pattern of ``A + I`` with unit entries: row ``i`` lists ``N(i) ∪ {i}``.

    The mask of an attention convolution (GAT): explicit zeros of ``A`` are dropped, and every
    node attends to itself.

    Parameters
    ----------
    A : sparse array of shape (n_nodes, n_nodes)
        Adjacency; row ``i`` holds the senders of node ``i``.

    Returns
    -------
    sparse csr_array of shape (n_nodes, n_nodes)
        float32, every stored entry 1, indices sorted.
    """
    # the loops inserted into one copy of A's arrays (a pattern copy plus the sum A + I held
    # about twice that at once); then the stored zeros, none of them on the diagonal, go
    M = with_unit_self_loops(A)
    M.eliminate_zeros()
    M.data[:] = 1.0
    return M


def pair_keys(pairs: np.ndarray, n: int) -> np.ndarray:
    """Integer keys ``u * n + v`` of node pairs (m, 2); CSR order sorts them."""
    return pairs[:, 0].astype(np.int64) * n + pairs[:, 1]


def contains_sorted(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Boolean mask: which of ``keys`` occur in the sorted array ``sorted_keys``."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


def stable_order(keys: np.ndarray, bound: int) -> np.ndarray:
    """The stable sorting permutation of integers ``keys`` in ``[0, bound)``.

    NumPy's stable sort of 16-bit integers is a radix sort, linear in the keys: keys below
    2¹⁶ are sorted so directly (60 µs for 15,000 keys, against 720 µs for torch's and 800 µs
    for NumPy's comparison sort of the same keys as int64), keys below 2³² by two such passes,
    the low 16 bits and then, stably, the high ones (3.3·10⁶ keys of up to 10⁶: 0.11 s against
    0.33 s for NumPy's stable sort of them as int32)."""
    if bound <= 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    if bound <= 1 << 32:
        low = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
        high = (keys[low] >> 16).astype(np.uint16)
        return low[np.argsort(high, kind="stable")]
    return np.argsort(keys, kind="stable")


_SYMMETRY_ENTRIES = 1 << 22  # entries of the transpose built at once, unless ...
_SYMMETRY_PASSES = 32  # ... that would take more passes over A than this


def is_symmetric(A: sp.csr_array) -> bool:
    """Whether ``A`` equals its transpose, weights included.

    Exact, and without a transposed copy: every node's in- and out-degrees are compared first,
    then the rows of ``Aᵀ`` are built a block at a time by scanning ``A`` for the entries of the
    block's columns, and compared with the same rows of ``A``. A block holds a 32nd of the
    entries, at most 4·10⁶ of them while that takes at most 32 blocks (above 1.3·10⁸ entries,
    a 32nd): the memory is a block's and a few arrays of n; the time, a pass over ``A`` per
    block and a linear sort of each block (`stable_order`).
    """
    n = A.shape[0]
    if A.shape[0] != A.shape[1]:
        return False
    A = sp.csr_array(A)
    if not A.has_canonical_format:
        A = A.copy()
        A.sum_duplicates()
    if A.nnz == 0:
        return True
    # the arrays of n in the index pointers' width: at 10⁷ nodes an int64 copy is 80 MB
    indptr = A.indptr
    in_degree = np.zeros(n, dtype=indptr.dtype)
    for start in range(0, A.nnz, _SYMMETRY_ENTRIES):  # bincount copies its input to int64
        in_degree += np.bincount(A.indices[start : start + _SYMMETRY_ENTRIES], minlength=n)
    if not np.array_equal(np.diff(indptr), in_degree):
        return False
    del in_degree
    block = min(_SYMMETRY_ENTRIES, max(1 << 16, A.nnz // 32))
    block = max(block, -(-A.nnz // _SYMMETRY_PASSES))  # a pass over A per block
    unsigned = np.dtype(f"uint{8 * A.indices.dtype.itemsize}")
    cuts = np.searchsorted(indptr, np.arange(0, A.nnz, block, dtype=indptr.dtype), side="right") - 1
    bounds = np.unique(np.r_[0, cuts, n])
    for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
        rows, cols, vals = [], [], []  # entries (j, i) of A with i in [r0, r1): rows of Aᵀ
        for start in range(0, A.nnz, block):
            chunk = A.indices[start : start + block]
            # r0 <= chunk < r1 as one comparison: below r0 wraps around to a large unsigned
            shifted = (chunk - chunk.dtype.type(r0)).view(unsigned)
            hit = np.flatnonzero(shifted < unsigned.type(r1 - r0)) + start
            rows.append(A.indices[hit])
            # positions in indptr's own width: searchsorted would convert indptr to theirs
            cols.append(np.searchsorted(indptr, hit.astype(indptr.dtype), side="right") - 1)
            vals.append(A.data[hit])
        rows, cols, vals = (np.concatenate(v) for v in (rows, cols, vals))
        order = stable_order(rows - r0, r1 - r0)  # by row of Aᵀ, columns ascending within
        lo, hi = indptr[r0], indptr[r1]
        if not (
            np.array_equal(cols[order], A.indices[lo:hi])
            and np.array_equal(vals[order], A.data[lo:hi])
        ):
            return False
    return True


def candidate_edges(A: sp.csr_array, undirected: bool) -> np.ndarray:
    """Edges ``(u, v)`` of ``A`` other than self-loops, (m, 2) in CSR order; ``u < v`` only (one
    pair per edge) when ``undirected``."""
    coo = A.tocoo()
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    keep = rows < cols if undirected else rows != cols
    return np.stack([rows[keep], cols[keep]], 1)


def without_pairs(A: sp.csr_array, pairs: np.ndarray, undirected: bool) -> sp.csr_array:
    """``A`` without the entries ``pairs`` (m, 2), and their reverses when ``undirected``; every
    other entry keeps its weight."""
    n = A.shape[0]
    keys = pair_keys(pairs, n)
    if undirected:
        keys = np.concatenate([keys, (keys % n) * n + keys // n])
    coo = A.tocoo()
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    keep = ~np.isin(rows * n + cols, keys)
    out = sp.csr_array((coo.data[keep], (rows[keep], cols[keep])), shape=A.shape, dtype=A.dtype)
    out.sort_indices()
    return out


def _hash_parts(h: Any, indptr: np.ndarray, indices: np.ndarray, data: np.ndarray) -> None:
    """Feed CSR parts to hash ``h`` as int64 structure and float32 values, whatever the index
    width or value dtype they are stored with (no copy when they already are)."""
    for array, dtype in ((indptr, np.int64), (indices, np.int64), (data, np.float32)):
        for start in range(0, len(array), _HASH_PIECE):  # no large converted copy
            h.update(np.ascontiguousarray(array[start : start + _HASH_PIECE], dtype=dtype))


def _hash_csr(h: Any, M: sp.csr_array) -> None:
    """Feed the canonical content of CSR ``M`` to hash ``h`` (`_hash_parts`)."""
    _hash_parts(h, M.indptr, M.indices, M.data)


_HASH_VALUES = 1 << 22  # feature values hashed per chunk of rows by the fingerprint
# values converted at once for the hash: any size feeds the same bytes
_HASH_PIECE = 1 << 16


def _hash_features(h: Any, X: np.ndarray | sp.csr_array) -> None:
    """Feed the content of features ``X`` to ``h`` the same way for dense and CSR storage:
    its rows in chunks, each as canonical CSR (sorted indices, no stored zeros). A dense chunk
    gives those parts directly (its non-zeros in row order), without building a matrix, a few
    rows at a time (the temporaries are a mask of the chunk and the parts of 2¹⁶ values); one
    without zeros (continuous features) needs no search for them: its column ids repeat
    ``0 … f-1``, and are fed from one block of them (512 KiB) over and over."""
    n, f = X.shape
    step = max(1, _HASH_VALUES // max(f, 1))
    pattern_rows = max(1, (1 << 16) // max(f, 1))  # the column ids of this many rows
    pattern = None if sp.issparse(X) else np.tile(np.arange(f, dtype=np.int64), pattern_rows)
    for start in range(0, n, step):
        if sp.issparse(X):
            chunk = sp.csr_array(X[start : start + step], dtype=np.float32)
            chunk.eliminate_zeros()
            chunk.sort_indices()
            _hash_csr(h, chunk)
            continue
        rows = np.asarray(X[start : start + step], dtype=np.float32)
        if f and np.count_nonzero(rows) == rows.size:  # no zero: every column of every row
            # the bytes `_hash_parts` would feed: row pointers, column ids, values
            h.update(np.arange(0, rows.size + 1, f, dtype=np.int64))
            for first in range(0, len(rows), pattern_rows):
                h.update(pattern[: (min(len(rows), first + pattern_rows) - first) * f])
            h.update(np.ascontiguousarray(rows))
            continue
        nonzero = rows != 0
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.count_nonzero(nonzero, axis=1), out=indptr[1:])
        h.update(indptr)
        blocks = range(0, len(rows), pattern_rows)  # a few rows at a time: small temporaries
        for first in blocks:
            columns = np.flatnonzero(nonzero[first : first + pattern_rows]) % f
            h.update(columns.astype(np.int64, copy=False))
        for first in blocks:
            h.update(rows[first : first + pattern_rows][nonzero[first : first + pattern_rows]])


def csr_digest(M: sp.csr_array) -> str:
    """Content hash of a CSR matrix."""
    h = hashlib.blake2b(digest_size=16)
    _hash_csr(h, M)
    h.update(repr(M.shape).encode())
    return h.hexdigest()


class Graph:
    """A validated graph: adjacency ``A`` (n × n) and node features ``X`` (n × f).

    Validated and converted once (CSR ``float32`` adjacency with summed duplicates and sorted
    indices, ``float32`` features, dense or CSR), then treated as read-only and shared by every
    view. Inputs that need no conversion are used in place, not copied: dense C-contiguous
    float32 features (a memory-mapped ``.npy`` file included), and a read-only float32 CSR
    adjacency with sorted indices, no duplicates and positive weights (one over memory-mapped
    files, for graphs larger than memory); any other adjacency becomes a copy of its own.

    Row ``i`` of ``A`` lists the nodes ``i`` receives messages from; an undirected graph has
    a symmetric ``A``. Convolution matrices derived from it are cached on the instance (and
    not pickled).

    Parameters
    ----------
    A : sparse matrix, array-like, networkx graph, torch tensor or edge_index
        Adjacency (n_nodes, n_nodes): any scipy sparse format, a dense array, a dense or
        sparse torch tensor, or a networkx graph (rows in ``G.nodes`` order, edge attribute
        ``weight``, a directed edge u → v sending from u to v); or PyG's ``edge_index``, an
        integer (2, m) array or tensor of edges source → target, the number of nodes taken
        from ``X``. Non-negative finite weights.
    X : sparse matrix, array-like or torch tensor of shape (n_nodes, n_features)
        Node features.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> G = Graph(sp.eye(4, k=1) + sp.eye(4, k=-1), np.ones((4, 2)))
    >>> G.nodes([0, 2]).shape
    (2,)
    """

    def __init__(self, A: Any, X: Any):
        if _is_torch(X):
            X = _from_torch(X)
        rows = getattr(X, "shape", (None,))[0] if hasattr(X, "shape") else None
        self.A = _as_csr_adjacency(A, rows)
        self.X = _as_features(X, self.A.shape[0])
        self._cache: dict[Any, Any] = {}

    @classmethod
    def from_pyg(cls, data: Any) -> Graph:
        """The graph of a PyTorch Geometric ``Data`` (duck-typed: ``edge_index``, ``x`` and,
        when present, ``edge_weight`` and ``num_nodes``); PyG itself is not imported.

        Parameters
        ----------
        data : torch_geometric.data.Data or alike
            ``edge_index`` (2, m) source → target, ``x`` (n, f) node features.

        Returns
        -------
        Graph
        """
        if getattr(data, "x", None) is None:
            raise ValueError("the PyG Data has no node features x; skvqgnn needs X")
        X = data.x
        n = int(getattr(data, "num_nodes", None) or X.shape[0])
        weight = getattr(data, "edge_weight", None)
        return cls(_from_edge_index(data.edge_index, n, weight), X)

    @classmethod
    def _validated(cls, A: sp.csr_array, X: np.ndarray | sp.csr_array) -> Graph:
        """A graph over already validated ``A`` and ``X`` (shared, not copied)."""
        graph = cls.__new__(cls)
        graph.A, graph.X, graph._cache = A, X, {}
        return graph

    @property
    def n_nodes(self) -> int:
        """Number of nodes (rows of ``A``)."""
        return self.A.shape[0]

    @property
    def n_features(self) -> int:
        """Number of feature columns of ``X``."""
        return self.X.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays of ``A`` and ``X`` (what pickling the graph sends)."""
        return _array_bytes(self.A) + _array_bytes(self.X)

    def __sizeof__(self) -> int:
        # the arrays, not only the instance: Dask's ``sizeof`` (and so joblib's Dask backend,
        # which sends an argument larger than 1 kB to the cluster once and reuses it for every
        # task) reads this through ``sys.getsizeof``
        return object.__sizeof__(self) + self.nbytes

    def nodes(self, index: Any = None) -> NodeSet:
        """A ``NodeSet`` view of the nodes ``index`` (all nodes when ``None``).

        Parameters
        ----------
        index : array-like of int or bool, slice or None, default=None
            Node ids (negative ids count from the end), a boolean mask of shape (n_nodes,), or a
            slice.

        Returns
        -------
        NodeSet
            A view of this graph; the graph is not copied.
        """
        if index is None:
            return NodeSet(self, np.arange(self.n_nodes))
        return NodeSet(self, _node_index(index, self.n_nodes))

    def pairs(self, pairs: Any) -> PairSet:
        """A ``PairSet`` view of node pairs ``pairs`` (m, 2): candidate links ``(u, v)``.

        Parameters
        ----------
        pairs : array-like of int of shape (n_pairs, 2)
            Node ids ``(u, v)`` in ``[0, n_nodes)``.

        Returns
        -------
        PairSet
            A view of this graph; the graph is not copied.
        """
        return PairSet(self, check_pairs(pairs, self.n_nodes))

    @property
    def is_symmetric(self) -> bool:
        """Whether ``A`` equals its transpose (an undirected graph)."""
        return self.cached("is_symmetric", lambda: is_symmetric(self.A))

    @property
    def fingerprint(self) -> str:
        """Content hash of ``A`` and ``X``: a fitted model recognises its training graph by it.

        It hashes content, not storage: the same edges and feature values give the same
        fingerprint whether ``X`` is dense or sparse and whatever the dtypes and index widths
        the inputs came in."""
        if "fingerprint" not in self._cache:
            h = hashlib.blake2b(digest_size=16)
            _hash_csr(h, self.A)
            _hash_features(h, self.X)
            h.update(repr((tuple(map(int, self.A.shape)), tuple(map(int, self.X.shape)))).encode())
            self._cache["fingerprint"] = h.hexdigest()
        return self._cache["fingerprint"]

    def cached(self, key: Any, build: Any) -> Any:
        """Return ``self._cache[key]``, computing it with ``build()`` the first time.

        Estimators keep what they derive from the graph here (convolution matrices,
        partitions), so fits on views of the same ``Graph`` compute it once. The cache is not
        pickled.

        Parameters
        ----------
        key : hashable
            Cache key.
        build : callable
            Called without arguments to compute the value when ``key`` is not cached.
        """
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    def __getstate__(self) -> dict[str, Any]:
        return {"A": self.A, "X": self.X}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.A = state["A"]
        self.X = state["X"]
        self._cache = {}

    def __repr__(self) -> str:
        kind = "sparse" if sp.issparse(self.X) else "dense"
        return (
            f"Graph(n_nodes={self.n_nodes}, n_edges={self.A.nnz}, "
            f"n_features={self.n_features}, X={kind})"
        )


def _array_bytes(M: np.ndarray | sp.sparray) -> int:
    if sp.issparse(M):
        return int(sum(a.nbytes for a in (M.data, M.indices, M.indptr)))
    return int(M.nbytes)


def _node_index(index: Any, n: int) -> np.ndarray:
    if isinstance(index, slice):
        return np.arange(n)[index]
    idx = np.asarray(index)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean node mask must have shape ({n},), got {idx.shape}")
        return np.flatnonzero(idx)
    if idx.ndim == 0:
        idx = idx.reshape(1)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise IndexError(f"node index must be a 1-D array of integers, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"node index out of range for a graph with {n} nodes")
    return np.where(idx < 0, idx + n, idx)


def check_pairs(pairs: Any, n: int, name: str = "pairs") -> np.ndarray:
    """Validate node pairs: an integer array of shape (m, 2) with ids in ``[0, n)``."""
    if isinstance(pairs, (NodeSet, PairSet, Graph)):
        raise TypeError(f"{name} must be an integer array of shape (m, 2), got a {type(pairs)}")
    P = np.asarray(pairs)
    if P.dtype == object or not (np.issubdtype(P.dtype, np.integer) or P.size == 0):
        raise TypeError(f"{name} must hold integer node ids, got dtype {P.dtype}")
    if P.size == 0:
        P = P.reshape(0, 2)
    if P.ndim != 2 or P.shape[1] != 2:
        raise ValueError(f"{name} must have shape (m, 2), one (u, v) pair per row, got {P.shape}")
    P = P.astype(np.int64)
    if P.size and (P.min() < 0 or P.max() >= n):
        raise ValueError(
            f"{name} holds node ids outside [0, {n}) (min {P.min()}, max {P.max()}); the graph "
            f"has {n} nodes"
        )
    return P


class _GraphView:
    """What ``NodeSet`` and ``PairSet`` share: a 1-D sequence of items (``self._items``, first
    axis) of one graph, indexed as scikit-learn indexes, never converted to an array."""

    _what = "items"
    _array_hint = ""

    def __init__(self, graph: Graph):
        if not isinstance(graph, Graph):
            raise TypeError(f"graph must be a skvqgnn.Graph, got {type(graph).__name__}")
        self.graph = graph

    @property
    def _items(self) -> np.ndarray:
        raise NotImplementedError

    def _view(self, items: np.ndarray) -> _GraphView:
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int]:
        return (len(self._items),)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, key: Any) -> _GraphView:
        if isinstance(key, tuple):
            if len(key) == 2 and key[1] is Ellipsis:
                key = key[0]
            else:
                raise IndexError(f"a {type(self).__name__} is 1-D: index it with one key")
        if isinstance(key, numbers.Integral):
            key = [key]
        return self._view(self._items[_node_index(key, len(self._items))])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(
            f"a {type(self).__name__} is a view of graph {self._what} and cannot become a NumPy "
            f"array; pass it to a skvqgnn estimator, or use {self._array_hint}. Tools that "
            "treat X as a 2-D array of columns (permutation_importance, ColumnTransformer) "
            "cannot take a view: to measure a feature's importance, permute that column of "
            "graph.X and score the estimator on Graph(graph.A, X_permuted).nodes(index)"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} {self._what} of {self.graph!r})"

    def __sizeof__(self) -> int:
        # the graph travels with the view, so a grid search under joblib's Dask backend sends
        # it to the cluster once rather than with every task (``Graph.__sizeof__``)
        return object.__sizeof__(self) + self._items.nbytes + sys.getsizeof(self.graph)


class NodeSet(_GraphView):
    """A view of some nodes of a ``Graph``: the ``X`` that graph estimators take.

    Behaves as a 1-D sequence of length ``len(index)`` for scikit-learn: ``shape == (len,)``,
    ``view[idx]`` (also ``view[(idx, Ellipsis)]``, as scikit-learn indexes) returns a view of the
    same graph. The graph is never copied. Converting a view to a NumPy array raises: the nodes
    have no meaning without their graph.

    Parameters
    ----------
    graph : Graph
    index : ndarray of int of shape (n_view,)
        Node ids into ``graph``.
    """

    _what = "nodes"
    _array_hint = ".index for node ids and .graph.X for features"

    def __init__(self, graph: Graph, index: np.ndarray):
        super().__init__(graph)
        self.index = np.asarray(index, dtype=np.int64)

    @property
    def _items(self) -> np.ndarray:
        return self.index

    def _view(self, items: np.ndarray) -> NodeSet:
        return NodeSet(self.graph, items)


class PairSet(_GraphView):
    """A view of node pairs ``(u, v)`` of a ``Graph``: the ``X`` of a link predictor.

    Behaves for scikit-learn as ``NodeSet`` does (``shape == (len,)``, indexing returns a view of
    the same graph, no conversion to a NumPy array), so cross-validation and grid search split
    pairs, never the graph. A link predictor fitted on a ``PairSet`` passes messages over its
    positive pairs only, so held-out pairs never reach message passing.

    Parameters
    ----------
    graph : Graph
    pairs : ndarray of int of shape (n_pairs, 2)
        Node ids into ``graph``.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> G = Graph(sp.eye(4, k=1) + sp.eye(4, k=-1), np.ones((4, 2)))
    >>> P = G.pairs([[0, 1], [1, 2], [0, 3]])
    >>> P.shape, P[1:].pairs.tolist()
    ((3,), [[1, 2], [0, 3]])
    """

    _what = "node pairs"
    _array_hint = ".pairs for the (m, 2) node ids"

    def __init__(self, graph: Graph, pairs: np.ndarray):
        super().__init__(graph)
        self.pairs = check_pairs(pairs, graph.n_nodes)

    @property
    def _items(self) -> np.ndarray:
        return self.pairs

    def _view(self, items: np.ndarray) -> PairSet:
        return PairSet(self.graph, items)
