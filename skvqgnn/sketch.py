"""Per-batch sketches of a convolution matrix (Eq. 6 and 7 of Ding et al., 2021).

For a batch ``B`` of ``b`` nodes and a convolution ``C`` (host CSR, full graph):

* ``C_in = C[B][:, B]`` (b × b): intra-batch messages, exact.
* the codeword sketch ``C̃_out R`` of the out-of-batch messages: for row ``i``, slice ``p`` and
  codeword ``v``, the sum of ``C_ij`` over out-of-batch senders ``j`` with ``r_p(j) = v``. Stored as
  one sparse matrix of shape (P·b, P·k), slice-major, so that a single product with the stacked
  codewords (P·k, D) gives every slice's out-of-batch messages at once.
* the transposed sketch ``(Cᵀ)_out R``: for batch sender ``j`` and codeword ``v`` the sum of
  ``C_ij`` over out-of-batch receivers ``i`` with ``r_p(i) = v``; it carries the gradient
  codewords back to the batch (the "blue" messages of Eq. 7).

In-batch nodes are excluded from both sketches (they travel exactly in ``C_in``), so no message
is counted twice, and intra-batch messages carry exactly ``C_ij``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from .graph import stable_order

__all__ = [
    "BatchEdges",
    "split_batch_edges",
    "split_batch_edges_and_transpose",
    "scaled_entries",
    "codeword_sketch",
    "group_by_codes",
    "to_torch_sparse",
    "SketchBags",
    "sketch_product",
    "spmm",
    "is_sparse",
    "dense",
    "dropout",
    "sparse_dropout",
]


@dataclass(frozen=True)
class BatchEdges:
    """Rows ``B`` of a convolution, split into intra-batch and out-of-batch entries.

    ``in_*`` use local indices (0..b-1) for both ends; ``out_rows`` are local batch rows and
    ``out_nodes`` global ids of the out-of-batch end. ``cols`` and ``vals`` are every entry of
    the rows, in row order (global ids), as ``gather_rows`` gave them.
    """

    b: int
    in_rows: np.ndarray
    in_cols: np.ndarray
    in_vals: np.ndarray
    out_rows: np.ndarray
    out_nodes: np.ndarray
    out_vals: np.ndarray
    cols: np.ndarray
    vals: np.ndarray

    def keep_out(self, mask: np.ndarray) -> BatchEdges:
        """The same edges with only the out-of-batch entries whose node is marked in ``mask``."""
        keep = mask[self.out_nodes]
        return replace(
            self,
            out_rows=self.out_rows[keep],
            out_nodes=self.out_nodes[keep],
            out_vals=self.out_vals[keep],
        )

    def intra(self) -> sp.csr_array:
        """``C_in`` as a (b, b) CSR matrix."""
        return sp.csr_array((self.in_vals, (self.in_rows, self.in_cols)), shape=(self.b, self.b))

    def intra_tensor(self, device: torch.device) -> Tensor:
        """``C_in`` as a coalesced torch COO tensor (b, b) on ``device``.

        The entries are already in coalesced order when the batch is sorted by node id (rows of
        a canonical CSR, columns mapped monotonically), as every sampler's batches are; others
        go through scipy to be sorted and summed.
        """
        key = self.in_rows * self.b + self.in_cols
        if len(key) > 1 and np.any(key[1:] <= key[:-1]):
            return to_torch_sparse(self.intra(), device)
        return torch.sparse_coo_tensor(
            torch.from_numpy(np.vstack([self.in_rows, self.in_cols]).astype(np.int64)),
            torch.from_numpy(np.asarray(self.in_vals, dtype=np.float32)),
            (self.b, self.b),
            is_coalesced=True,
            check_invariants=False,
        ).to(device)


def gather_rows(C: sp.csr_array, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """COO entries (local row, column, value) of ``C[rows]`` without building a sub-matrix."""
    starts = C.indptr[rows]
    lengths = C.indptr[rows + 1] - starts
    total = int(lengths.sum())
    local = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths)
    pos = offsets + np.arange(total, dtype=np.int64)
    return local, C.indices[pos].astype(np.int64), C.data[pos]


def scaled_entries(
    vals: np.ndarray,
    local: np.ndarray,
    cols: np.ndarray,
    rows: np.ndarray,
    row_scale: np.ndarray | None,
    col_scale: np.ndarray | None,
) -> np.ndarray:
    """Entries ``vals`` of rows ``rows`` (``local`` indexes into them, ``cols`` are global
    ids) times ``row_scale[row] · col_scale[col]``: the entries of ``diag(l) M diag(r)``. The
    product of the two scales is formed first, as `mean_norm` and `gcn_norm` do, so the
    values are theirs to the bit and a symmetric ``M`` with ``l = r`` gives a symmetric
    ``C``."""
    scale = None if row_scale is None else row_scale[rows][local]
    if col_scale is not None:
        scale = col_scale[cols] if scale is None else scale * col_scale[cols]
    return vals if scale is None else vals * scale


def split_batch_edges(
    M: sp.csr_array,
    batch: np.ndarray,
    position: np.ndarray,
    segment: np.ndarray | None = None,
    row_scale: np.ndarray | None = None,
    col_scale: np.ndarray | None = None,
) -> BatchEdges:
    """Split the rows ``batch`` of ``C = diag(row_scale) M diag(col_scale)`` (a scale of
    ``None`` is ones); ``position[j]`` is j's index in the batch or -1.

    ``segment`` (b,), when given, says which of several batches each row belongs to: an entry
    between rows of different segments is then out-of-batch too.
    """
    return _split(M, batch, position, segment, row_scale, col_scale, False)[0]


def split_batch_edges_and_transpose(
    M: sp.csr_array,
    batch: np.ndarray,
    position: np.ndarray,
    segment: np.ndarray | None = None,
    row_scale: np.ndarray | None = None,
    col_scale: np.ndarray | None = None,
) -> tuple[BatchEdges, BatchEdges]:
    """The rows ``batch`` of ``C = diag(l) M diag(r)`` and of ``Cᵀ = diag(r) M diag(l)`` for
    a symmetric ``M`` (``l = row_scale``, ``r = col_scale``): one gather of ``M``'s rows
    serves both, with the scales swapped, and ``Cᵀ`` is neither built nor split. When ``l``
    and ``r`` are the same array (or both ``None``) ``C`` is symmetric and both are one
    object. Arguments as `split_batch_edges`."""
    return _split(M, batch, position, segment, row_scale, col_scale, True)


def _split(
    M, batch, position, segment, left, right, transpose
) -> tuple[BatchEdges, BatchEdges | None]:
    rows, cols, mvals = gather_rows(M, batch)
    local = position[cols]
    inside = local >= 0
    if segment is not None:
        inside &= segment[local] == segment[rows]  # local = -1 is outside already
    outside = ~inside
    shared = {
        "b": len(batch),
        "in_rows": rows[inside],
        "in_cols": local[inside],
        "out_rows": rows[outside],
        "out_nodes": cols[outside],
        "cols": cols,
    }

    def edges_of(vals: np.ndarray) -> BatchEdges:
        return BatchEdges(**shared, in_vals=vals[inside], out_vals=vals[outside], vals=vals)

    edges = edges_of(scaled_entries(mvals, rows, cols, batch, left, right))
    if not transpose:
        return edges, None
    if left is right:
        return edges, edges
    return edges, edges_of(scaled_entries(mvals, rows, cols, batch, right, left))


def codeword_sketch(edges: BatchEdges, codes: np.ndarray, n_codewords: int) -> SketchBags:
    """The (P·b, P·k) sketch of the out-of-batch entries of ``edges`` under ``codes`` (n, P),
    as weighted bags on the host.

    Slice-major: row ``p·b + i`` is batch row ``i`` in slice ``p``, column ``p·k + v`` codeword
    ``v`` of slice ``p``. Built in O(E·P) without sorting: a row holds one entry per out-of-batch
    entry of its batch row, so two senders with the same codeword are two entries of one column,
    which ``sketch_product`` sums. Only when the batch has more out-of-batch entries than
    ``b·k`` are the duplicates summed (a sort), so the sketch never holds more than ``P·b·k``
    entries, whatever the degree. Indices are int32 (``P·k`` columns and ``P·E`` entries are
    far below 2³¹), gathered from the code table by torch's ``index_select`` and transposed by a
    copy into int32 before the slice offsets are added (a transposing add is several times
    slower on large batches).
    """
    P = codes.shape[1]
    b = edges.b
    rows, nodes, vals = edges.out_rows, edges.out_nodes, edges.out_vals
    if len(rows) > 1 and np.any(rows[1:] < rows[:-1]):
        order = stable_order(rows, b)
        rows, nodes, vals = rows[order], nodes[order], vals[order]
    offsets = torch.arange(P, dtype=torch.int32)[:, None] * n_codewords
    table = torch.from_numpy(codes)
    picked = table.index_select(0, torch.from_numpy(np.asarray(nodes, dtype=np.int64)))
    indices = torch.empty(P, len(rows), dtype=torch.int32)
    indices.copy_(picked.T).add_(offsets)  # slice p's block: its codes in entry order
    indices = indices.view(-1)
    row_start = np.zeros(b, dtype=np.int64)  # each batch row's first entry, in one slice
    np.cumsum(np.bincount(rows, minlength=b)[:-1], out=row_start[1:])
    starts = (np.arange(P, dtype=np.int64)[:, None] * len(rows) + row_start).astype(np.int32)
    weights = torch.from_numpy(np.asarray(vals, dtype=np.float32)).repeat(P)
    bags = SketchBags(indices, torch.from_numpy(starts.ravel()), weights, (P * b, P * n_codewords))
    if len(rows) > b * n_codewords:
        S = bags.to_scipy()
        S.sum_duplicates()
        bags = SketchBags(
            torch.from_numpy(S.indices.astype(np.int32)),
            torch.from_numpy(S.indptr[:-1].astype(np.int32)),
            torch.from_numpy(S.data.astype(np.float32)),
            bags.shape,
        )
    return bags


@dataclass(frozen=True)
class SketchBags:
    """A codeword sketch as weighted bags: row ``r`` is the bag
    ``indices[offsets[r]:offsets[r + 1]]`` (columns, with repeats; int32) weighted by
    ``weights``.

    Unlike a torch CSR tensor, whose invariants demand sorted and distinct columns in a row,
    bags may repeat a column, so the sketch needs no sort; ``sketch_product`` sums the repeats.
    """

    indices: Tensor
    offsets: Tensor
    weights: Tensor
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def to(self, device: torch.device) -> SketchBags:
        """The same bags on ``device``."""
        return SketchBags(
            self.indices.to(device), self.offsets.to(device), self.weights.to(device), self.shape
        )

    def to_scipy(self) -> sp.csr_array:
        """The sketch as a SciPy CSR matrix (repeated columns kept, summed by its products)."""
        indptr = np.append(self.offsets.cpu().numpy(), self.nnz)
        return sp.csr_array(
            (self.weights.cpu().numpy(), self.indices.cpu().numpy(), indptr), shape=self.shape
        )

    def toarray(self) -> np.ndarray:
        """The sketch as a dense array, repeated columns summed."""
        return self.to_scipy().toarray()


def sketch_product(sketch: SketchBags, words: Tensor) -> Tensor:
    """``sketch @ words`` (rows, D) for stacked codewords ``words`` (P·k, D): one weighted sum
    of codewords per row, repeated columns included (``embedding_bag``)."""
    if words.shape[0] != sketch.shape[1]:
        raise ValueError(f"a sketch of {sketch.shape[1]} columns times {words.shape[0]} codewords")
    return F.embedding_bag(
        sketch.indices,
        words,
        sketch.offsets,
        mode="sum",
        per_sample_weights=sketch.weights.to(words.dtype),
    )


def group_by_codes(
    rows: np.ndarray, nodes: np.ndarray, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge out-of-batch entries ``(row, node)`` whose nodes have the same codes in every slice.

    Such nodes have the same reconstruction, so for a learnable convolution they are one sender
    (or receiver) term weighted by their number (a codeword stands for ``count(i, v)``
    nodes). Returns ``(rows, groups, counts, group_codes)``: the distinct (row, group) pairs, their
    multiplicities, and the codes (U, P) of each group.
    """
    P = codes.shape[1]
    if len(nodes) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, np.zeros((0, P), dtype=codes.dtype)
    if P == 1:  # whole-vector codes: the group is the codeword, no sort of the keys
        key = codes[nodes, 0].astype(np.int64)
        words = np.flatnonzero(np.bincount(key))  # the codewords present, ascending
        lookup = np.zeros(int(words[-1]) + 1, dtype=np.int64)
        lookup[words] = np.arange(len(words))
        n_groups = len(words)
        pair = rows * n_groups + lookup[key]
        size = (int(rows.max()) + 1) * n_groups
        if size <= 16 * len(pair):  # dense count, then the pairs present
            counts = np.bincount(pair, minlength=size)
            pairs = np.flatnonzero(counts)
            counts = counts[pairs]
        else:
            pairs, counts = np.unique(pair, return_counts=True)
        return pairs // n_groups, pairs % n_groups, counts, words[:, None].astype(codes.dtype)
    node_codes = np.ascontiguousarray(codes[nodes])  # (E, P)
    keys = node_codes.view(np.dtype((np.void, node_codes.itemsize * P))).ravel()
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    n_groups = len(first)
    pairs, counts = np.unique(rows * n_groups + inverse.ravel(), return_counts=True)
    return pairs // n_groups, pairs % n_groups, counts, node_codes[first]


def to_torch_sparse(M: sp.csr_array, device: torch.device) -> Tensor:
    """A scipy CSR matrix as a coalesced torch COO tensor on ``device``."""
    coo = M.tocoo()
    indices = np.vstack([coo.row, coo.col]).astype(np.int64)
    return torch.sparse_coo_tensor(
        torch.from_numpy(indices),
        torch.from_numpy(np.asarray(coo.data, dtype=np.float32)),
        M.shape,
        is_coalesced=True,
        check_invariants=False,
    ).to(device)


def _torch_sparse_available() -> bool:
    try:
        import torch_sparse  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    """``"auto"`` -> ``"torch_sparse"`` when that package imports, else ``"torch"``."""
    if backend == "auto":
        return "torch_sparse" if _torch_sparse_available() else "torch"
    if backend == "torch_sparse" and not _torch_sparse_available():
        raise ImportError(
            "sparse_backend='torch_sparse' needs the optional torch-sparse package: "
            "pip install 'skvqgnn[torch-sparse]'"
        )
    return backend


def spmm(M: Tensor, x: Tensor, backend: str = "torch") -> Tensor:
    """Sparse (COO) times dense, differentiable in ``x``; ``backend`` picks the kernel."""
    if backend == "torch_sparse":
        from torch_sparse import SparseTensor, matmul

        idx = M.indices()
        st = SparseTensor(row=idx[0], col=idx[1], value=M.values(), sparse_sizes=M.shape)
        return matmul(st, x)
    return torch.sparse.mm(M, x)


def is_sparse(x: Tensor) -> bool:
    """Whether ``x`` is a sparse tensor of any layout (COO or CSR)."""
    return x.layout != torch.strided


def dense(x: Tensor) -> Tensor:
    """``x`` as a dense tensor."""
    return x.to_dense() if is_sparse(x) else x


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout of a dense tensor: each value zeroed with probability ``p``, the others
    scaled by ``1 / (1 - p)``, drawn from torch's global generator.

    The same distribution as ``torch.nn.functional.dropout``, from a uniform draw compared with
    ``p`` instead of ``bernoulli_``, which on the CPU is a scalar loop: forward and backward of a
    (1024, 64) input take a third of the time."""
    if not training or p == 0:
        return x
    if p >= 1:
        return x * 0
    keep = torch.rand(x.shape, dtype=x.dtype, device=x.device).ge_(p)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def sparse_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout (`dropout`) on the stored values of a sparse (COO or CSR) tensor, or on every
    value of a dense one."""
    if not is_sparse(x):
        return dropout(x, p, training)
    if not training or p == 0:
        return x
    if x.layout == torch.sparse_csr:
        values = dropout(x.values(), p, True)
        return torch.sparse_csr_tensor(
            x.crow_indices(), x.col_indices(), values, x.shape, check_invariants=False
        )
    return torch.sparse_coo_tensor(
        x.indices(),
        dropout(x.values(), p, True),
        x.shape,
        is_coalesced=True,
        check_invariants=False,
    )
