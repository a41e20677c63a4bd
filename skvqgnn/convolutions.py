"""The kinds of convolution a backbone aggregates with, one class each, and the batches they make.

A layer computes ``Z = Σ_s combine(M^(s))`` from the messages ``M^(s) = C^(s) X`` of each of its
convolutions. For a batch ``B`` the messages from nodes outside ``B`` come from codewords
(Eq. 6), and the gradient that batch nodes receive from receivers outside ``B`` comes from
gradient codewords (Eq. 7, the "blue" messages). How both are computed depends on the kind:

==================  ==============================  ==========================================
kind                Eq. 6, out-of-batch senders     Eq. 7, out-of-batch receivers
==================  ==============================  ==========================================
``Identity``        none (``M = X``)                none
``Initial``         none (``M = H⁰``, the node's    none
                    own first-layer output)
``Fixed(C)``        ``C̃_out X̃``: codeword sketch    ``(Cᵀ)_out R G̃``: transposed sketch
                    times feature codewords          times gradient codewords
``MaskedAttention``  senders with equal codes, one   ``attention_blue`` over the receivers'
                    term weighted by their count     gradient codewords
``GlobalAttention``  every codeword, weighted by     ``attention_blue`` over every gradient
                    the out-of-batch nodes it holds  codeword
==================  ==============================  ==========================================

Each kind owns every step of its convolution, so that the rest of the package never asks a
convolution what it is:

* ``prepare`` (host, once per graph): what the kind needs of the graph (the first layer's
  aggregated input ``C X``; the transpose of a pattern is built when backward messages first
  need it, ``transposed``);
* ``split`` and ``batch`` (host to device, once per batch): its share of a `Batch`, a `Part`;
* ``input_messages``: the first layer's messages, which aggregate the raw features;
* ``messages``: Eq. 6 at a VQ layer; ``blue_messages``: Eq. 7;
* ``gradient_channels``: what of ``∂ℓ/∂M`` the gradient codebook clusters;
* ``exact_messages``: the full-neighbour messages of exact inference.

The device-side methods are class methods: the network holds its convolutions' classes, the
graph-side objects belong to one graph (``GraphData``). A new kind is a subclass.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch.nn import functional as F

from .attention import AttentionConvolution, attend, attend_chunked, attention_blue
from .graph import Graph, is_symmetric
from .sketch import (
    BatchEdges,
    SketchBags,
    codeword_sketch,
    dense,
    gather_rows,
    group_by_codes,
    scaled_entries,
    sketch_product,
    sparse_dropout,
    split_batch_edges,
    split_batch_edges_and_transpose,
    spmm,
)
from .vq import AssignmentTable, ProductCodebook

__all__ = [
    "KINDS",
    "Attention",
    "Batch",
    "Convolution",
    "Fixed",
    "GlobalAttention",
    "GraphData",
    "Groups",
    "Identity",
    "Initial",
    "MaskedAttention",
    "Part",
    "as_convolution",
    "dense_rows",
    "input_rows",
    "make_batch",
]

_PAIRS = 1 << 24  # (receiver, sender, head) scores computed at once by exact global attention


# -- host rows to the device -----------------------------------------------------------------------
def input_rows(M: np.ndarray | sp.csr_array, rows: np.ndarray, device: torch.device) -> Tensor:
    """Rows of a first-layer input as a device tensor: sparse CSR when ``M`` is sparse (torch's
    CSR product is several times faster than its COO one on the CPU)."""
    if not sp.issparse(M):
        return torch.from_numpy(M[rows]).to(device)
    _, cols, vals = gather_rows(M, rows)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(M.indptr[rows + 1] - M.indptr[rows], out=indptr[1:])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used here as documented
        warnings.simplefilter("ignore", UserWarning)
        out = torch.sparse_csr_tensor(
            torch.from_numpy(indptr),
            torch.from_numpy(cols),
            torch.from_numpy(np.asarray(vals, dtype=np.float32)),
            (len(rows), M.shape[1]),
            check_invariants=False,
        )
    return out.to(device)


def dense_rows(M: np.ndarray | sp.csr_array, rows: np.ndarray, device: torch.device) -> Tensor:
    """Rows of a dense or CSR matrix as a dense float32 device tensor."""
    out = M[rows].toarray() if sp.issparse(M) else M[rows]
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(device)


def _long(a: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)


# -- what a batch carries --------------------------------------------------------------------------
@dataclass
class Groups:
    """Out-of-batch terms of a learnable convolution, grouped by codes.

    Senders (or receivers) with the same codes have the same reconstruction, so they are one
    term weighted by their number. For the forward pass ``rows`` are batch receivers and
    ``cols`` sender groups; for the backward pass ``rows`` are batch senders and ``cols``
    receiver groups. Both are ``None`` for global attention (every row meets every group).

    log_count : per pair (E,), or per group (U,) for global attention
    codes : (U, P) the codes of each group's reconstruction
    """

    rows: Tensor | None
    cols: Tensor | None
    log_count: Tensor
    codes: Tensor


@dataclass
class Part:
    """One convolution's share of a batch, on the device (the fields its kind uses).

    inputs : the first layer's aggregated input rows ``(C X)_B`` (b, f0) of an identity or
        fixed convolution (dense, or sparse CSR)
    intra : intra-batch pairs: ``C_in`` as a sparse (b, b) tensor (fixed), or (rows, cols) of
        the mask inside the batch (masked attention)
    diagonal : the batch rows' entries of a fixed convolution's separate diagonal (b,), or
        ``None``: ``C_in X_B`` is then ``intra X_B + diagonal ⊙ X_B``
    input_pairs : (rows, cols into ``Batch.raw``) of a masked attention's first layer: the
        intra-batch pairs and those of the senders read exactly
    input_senders : ``Groups`` of a learnable convolution's other out-of-batch senders in the
        first layer, by their input codes; ``None`` when every sender is read exactly
    senders : per VQ layer, the out-of-batch senders of Eq. 6: the codeword sketch
        ``C̃_out R`` (``SketchBags``, fixed) or ``Groups`` (attention)
    receivers : per VQ layer, the out-of-batch receivers of Eq. 7: the transposed sketch
        ``(Cᵀ)_out R`` or ``Groups``; empty without backward messages
    """

    inputs: Tensor | None = None
    intra: Any = None
    diagonal: Tensor | None = None
    input_pairs: tuple[Tensor, Tensor] | None = None
    input_senders: Groups | None = None
    senders: list[Any] = field(default_factory=list)
    receivers: list[Any] = field(default_factory=list)


@dataclass
class Batch:
    """Device tensors of one mini-batch.

    nodes : (b,) the batch's node ids (host)
    parts : per convolution, its `Part`
    raw : input features of the batch rows, then of the out-of-batch senders a learnable
        convolution's first layer reads exactly (dense, or sparse CSR); ``None`` without one
    backward : whether the parts carry the receivers of Eq. 7
    """

    nodes: Tensor
    parts: list[Part]
    raw: Tensor | None = None
    backward: bool = False


@dataclass
class BatchContext:
    """What every convolution's ``batch`` reads: the batch, the codes and the device.

    nodes : (b,) node ids
    halo : sorted ids of the out-of-batch senders whose raw features the first layer reads
        exactly (learnable convolutions)
    tables : per VQ layer, the feature and gradient codes of every node
    input_table : input codes of the raw features, or ``None``
    receivers : (n,) bool, the nodes with a loss term, or ``None``: the output layer's
        gradient is zero elsewhere, so its backward messages come only from those
    device : where the part goes
    """

    nodes: np.ndarray
    halo: np.ndarray
    tables: Sequence[AssignmentTable]
    input_table: AssignmentTable | None
    receivers: np.ndarray | None
    device: torch.device

    def restricted(self, level: int) -> bool:
        """Whether the out-of-batch receivers of VQ layer ``level`` are the marked ones only."""
        return self.receivers is not None and level == len(self.tables) - 1


# -- the kinds -------------------------------------------------------------------------------------
class Convolution:
    """One convolution ``C^(s)`` of a backbone, prepared for one graph.

    Subclasses are the kinds: `Identity`, `Fixed`, `MaskedAttention` and `GlobalAttention`. A
    backbone's ``convolutions(A)`` lists instances; the class attributes tell the network what
    a layer needs for it.

    Attributes
    ----------
    name : str
        The name of a built-in kind in weights-only files (``skvqgnn.persistence``, which
        stores built-in backbones only).
    learnable : bool
        Whether every layer holds an ``AttentionConvolution`` for it (in its ``attention``
        list, in the order of the backbone's learnable convolutions).
    whole_vectors : bool
        Whether its codewords must be whole vectors (one slice per layer input).
    backward_by_default : bool
        Whether ``backward_messages="auto"`` adds its backward messages.
    uses_initial : bool
        Whether its messages read the first layer's output (an initial residual): exact
        inference then keeps that layer's output for every node.
    every_pair : bool
        Whether its exact messages read every node for each receiver (global attention): an
        exact layer then costs n² work, so the codebook initialisation does not run one.
    matrix : csr_array or None
        The (receiver, sender) pattern it aggregates over; ``None`` for the identity and for
        every pair.
    """

    name: ClassVar[str] = ""
    learnable: ClassVar[bool] = False
    whole_vectors: ClassVar[bool] = False
    backward_by_default: ClassVar[bool] = False
    uses_initial: ClassVar[bool] = False
    every_pair: ClassVar[bool] = False
    matrix: sp.csr_array | None = None

    # -- host: once per graph
    def transposed(self) -> sp.csr_array:
        """``matrix``ᵀ as CSR, for the backward messages: built when first asked for (inference
        never needs it) and kept; when ``matrix`` is symmetric (an undirected graph's GCN or
        attention pattern) it is ``matrix`` itself, and no second matrix is kept."""
        if getattr(self, "_transposed", None) is None:
            M = self.matrix
            self._transposed = M if is_symmetric(M) else _transpose(M)
        return self._transposed

    def prepare(self, graph: Graph) -> None:
        """Compute what the kind needs of the graph (called once, by `GraphData`).

        Parameters
        ----------
        graph : Graph
            The graph whose adjacency gave this convolution.
        """

    def split(
        self,
        nodes: np.ndarray,
        position: np.ndarray,
        backward: bool,
        segment: np.ndarray | None = None,
    ) -> tuple[BatchEdges | None, BatchEdges | None]:
        """The entries of ``matrix`` into the batch, split into intra-batch and out-of-batch ones.

        Parameters
        ----------
        nodes : ndarray of shape (b,)
            The batch.
        position : ndarray of shape (n_nodes,), int32
            Each node's index in the batch, -1 outside it.
        backward : bool
            Whether the entries of the transpose (the batch nodes' receivers) are needed too.
        segment : ndarray of shape (b,), default=None
            Which of several batches each node belongs to (``make_batch``).

        Returns
        -------
        edges, tedges : BatchEdges or None
            The rows of the batch in ``matrix`` and (``backward``) in its transpose (the same
            object when ``matrix`` is symmetric); ``None`` where the kind has no pattern.
        """
        if self.matrix is None:
            return None, None
        edges = split_batch_edges(self.matrix, nodes, position, segment)
        if not backward:
            return edges, None
        transposed = self.transposed()
        if transposed is self.matrix:
            return edges, edges
        return edges, split_batch_edges(transposed, nodes, position, segment)

    def exact_senders(self, edges: BatchEdges | None) -> np.ndarray:
        """Out-of-batch senders whose raw features the first layer would read exactly.

        Parameters
        ----------
        edges : BatchEdges or None
            What `split` gave.

        Returns
        -------
        ndarray of int64
            Node ids, with repeats (one per entry); the batch reads those most often wanted.
        """
        return np.zeros(0, dtype=np.int64)

    def batch(
        self,
        ctx: BatchContext,
        edges: BatchEdges | None,
        tedges: BatchEdges | None,
        backward: bool,
    ) -> Part:
        """The convolution's share of a batch, moved to the device.

        Parameters
        ----------
        ctx : BatchContext
            The batch, the codes of every VQ layer and the device.
        edges, tedges : BatchEdges or None
            What `split` gave.
        backward : bool
            Whether to add the out-of-batch receivers of Eq. 7.

        Returns
        -------
        Part
        """
        return Part()

    # -- device: per step (class methods: the network holds the kinds, not a graph)
    @classmethod
    def n_channels(cls, attention: AttentionConvolution | None) -> int:
        """The number of gradient channels it keeps in a gradient codebook.

        Parameters
        ----------
        attention : AttentionConvolution or None
            Its module in the layer, if it is learnable.

        Returns
        -------
        int
            0: no gradient codewords, no backward messages.
        """
        return 0

    @classmethod
    def n_aux(cls, attention: AttentionConvolution | None) -> int:
        """The number of auxiliary per-node scalars its gradient codewords keep.

        Parameters
        ----------
        attention : AttentionConvolution or None
            Its module in the layer, if it is learnable.

        Returns
        -------
        int
        """
        return 0

    @classmethod
    def input_messages(
        cls,
        part: Part,
        raw: Callable[[], Tensor],
        b: int,
        attention: AttentionConvolution | None,
        network: Any,
    ) -> Tensor:
        """The first layer's messages into the batch rows.

        Parameters
        ----------
        part : Part
            Its share of the batch.
        raw : callable
            ``raw()`` gives the raw features of the batch rows and of the senders read
            exactly, after dropout (drawn once for every convolution that asks).
        b : int
            The number of batch rows.
        attention : AttentionConvolution or None
            Its module in the first layer.
        network : VQGNN
            For the dropout rates, the sparse kernel and the input codebook.

        Returns
        -------
        Tensor of shape (b, f0), or (b, H, ·) for attention
        """
        return sparse_dropout(part.inputs, network.dropout, network.training)

    @classmethod
    def messages(
        cls,
        part: Part,
        level: int,
        x: Tensor,
        initial: Tensor,
        codebook: ProductCodebook,
        attention: AttentionConvolution | None,
        network: Any,
    ) -> tuple[Tensor, Tensor | None]:
        """Eq. 6: the messages into the batch rows of a VQ layer, intra-batch senders exact and
        out-of-batch ones from the feature codewords.

        Parameters
        ----------
        part : Part
            Its share of the batch.
        level : int
            The VQ layer (0: the input of the second layer).
        x : Tensor of shape (b, f)
            The layer input of the batch rows (after dropout).
        initial : Tensor of shape (b, h1)
            The batch rows' output of the first layer (the input of VQ layer 0), for kinds
            that use it (`uses_initial`).
        codebook : ProductCodebook
            The level's codebook.
        attention : AttentionConvolution or None
            Its module in the layer.
        network : VQGNN

        Returns
        -------
        messages : Tensor of shape (b, f), or (b, H, f) for attention
        lse : Tensor of shape (b, H) or None
            The attention log normalisers, kept for the gradient codewords.
        """
        raise NotImplementedError

    @classmethod
    def blue_messages(
        cls,
        part: Part,
        level: int,
        x: Tensor,
        codebook: ProductCodebook,
        attention: AttentionConvolution | None,
        channels: range,
        aux: range,
    ) -> Tensor | None:
        """Eq. 7: the gradient the batch inputs receive from out-of-batch receivers, through
        the gradient codewords, each channel scaled by its trust ratio.

        Parameters
        ----------
        part : Part
            Its share of the batch.
        level : int
            The VQ layer.
        x : Tensor of shape (b, f)
            The layer input of the batch rows (detached).
        codebook : ProductCodebook
            The level's codebook.
        attention : AttentionConvolution or None
            Its module in the layer.
        channels, aux : range
            Its gradient channels and auxiliary scalars in ``codebook`` (``VQGNN.channels``).

        Returns
        -------
        Tensor of shape (b, f) or None
            ``None``: no backward messages.
        """
        return None

    @classmethod
    def gradient_channels(
        cls, messages: Tensor, grad: Tensor, lse: Tensor | None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """What of ``∂ℓ/∂M`` the gradient codebook clusters.

        Parameters
        ----------
        messages : Tensor
            The messages ``M`` of a training step (`messages`).
        grad : Tensor
            ``∂ℓ/∂M``, of the same shape.
        lse : Tensor or None
            The attention log normalisers of the step.

        Returns
        -------
        channels : list of Tensor
            `n_channels` tensors of shape (b, f).
        aux : list of Tensor
            Tensors of shape (k, b), `n_aux` rows in all.
        """
        return [], []

    def exact_messages(
        self,
        layer: int,
        source: np.ndarray | sp.csr_array,
        initial: np.ndarray | None,
        rows: np.ndarray,
        attention: AttentionConvolution | None,
        network: Any,
        device: torch.device,
    ) -> Tensor:
        """Full-neighbour messages into ``rows`` (exact inference).

        Parameters
        ----------
        layer : int
            The layer (0: the first, which aggregates the raw features).
        source : ndarray or csr_array of shape (n_nodes, f)
            The layer's input for every node (the raw features ``X`` in the first layer).
        initial : ndarray of shape (n_nodes, h1) or None
            Every node's output of the first layer, in later layers of a network with a kind
            that uses it (`uses_initial`); else ``None``.
        rows : ndarray
            The receivers.
        attention : AttentionConvolution or None
            Its module in the layer.
        network : VQGNN
        device : torch.device

        Returns
        -------
        Tensor
            As `messages` (as `input_messages` in the first layer).
        """
        raise NotImplementedError


class _OwnRow(Convolution):
    """A node's message is its own row: in the first layer its raw features (the batch's rows
    of ``X``), later a representation of the node itself; no out-of-batch messages."""

    def prepare(self, graph: Graph) -> None:
        self.inputs = graph.X

    def inputs_of(self, rows: np.ndarray, device: torch.device) -> Tensor:  # noqa: D102
        return input_rows(self.inputs, rows, device)

    def batch(self, ctx, edges, tedges, backward) -> Part:
        return Part(inputs=self.inputs_of(ctx.nodes, ctx.device))


class Identity(_OwnRow):
    """``C = I``: the node's own input (a root weight). No out-of-batch messages."""

    name = "identity"

    @classmethod
    def messages(cls, part, level, x, initial, codebook, attention, network):  # noqa: D102
        return x, None

    def exact_messages(self, layer, source, initial, rows, attention, network, device):  # noqa: D102
        if layer == 0:
            return self.inputs_of(rows, device)
        return torch.from_numpy(source[rows]).to(device)


class Initial(_OwnRow):
    """``M = H⁰``: the node's own output of the first layer, an initial residual (GCNII, APPNP).

    In the first layer it is the raw features, from which the layer computes ``H⁰``. Later
    layers receive every batch row's own ``H⁰``: a message from the node to itself, exact, so it
    needs no codeword and sends no backward message (its gradient reaches ``H⁰`` of the batch
    rows through the forward pass).
    """

    name = "initial"
    uses_initial = True

    @classmethod
    def messages(cls, part, level, x, initial, codebook, attention, network):  # noqa: D102
        return initial, None

    def exact_messages(self, layer, source, initial, rows, attention, network, device):  # noqa: D102
        if layer == 0:
            return self.inputs_of(rows, device)
        return torch.from_numpy(initial[rows]).to(device)


class Fixed(Convolution):
    """A fixed convolution matrix ``C`` (GCN's ``D̃^-½(A+I)D̃^-½``, SAGE's ``D⁻¹A``, GIN's ``A``).

    Its first layer is exact: the batch rows of ``C X`` are computed on the host from the
    rows of ``C`` and ``X`` (O(b·d·f) per batch; nothing of size n·f is kept beside ``X``).
    Later layers take intra-batch messages from ``C_in`` and out-of-batch ones from the
    codeword sketch; the backward messages use the transposed sketch and the gradient
    codewords of ``∂ℓ/∂M`` (before the layer's weights), so they reach the batch inputs only.

    ``C = diag(l) M diag(r) + diag(d)``: a stored matrix ``M`` with optional row and column
    scales and a diagonal of its own. The built-in backbones store no matrix of their own:
    ``M`` is the graph's adjacency ``A`` itself, and the normalisation is three vectors of n
    (GCN: ``l = r = d̃^-½`` and ``d`` the missing self-loops' weights, `gcn_norm_scales`;
    GraphSAGE-mean: ``l = 1/deg``; GIN: none). A batch's entries of ``C`` are formed when its
    rows of ``M`` are gathered (``M_ij · l_i · r_j``, the same float32 values a scaled copy
    of ``M`` would hold), so a convolution costs 4 to 12 bytes per node instead of a second
    matrix of the graph's size. When ``M`` is symmetric (an undirected graph) the rows of
    ``Cᵀ = diag(r) M diag(l) + diag(d)`` come from the same gather, and no transpose is built.
    A self-message is always intra-batch: ``d`` enters ``C_in`` and the first layer's inputs,
    never the sketches.

    Parameters
    ----------
    matrix : csr_array of shape (n_nodes, n_nodes)
        ``M``; row ``i`` holds the (unscaled) weights of the messages node ``i`` receives.
        Sorted indices.
    row_scale, col_scale : ndarray of shape (n_nodes,), default=None
        ``l`` and ``r``; ``None`` is a vector of ones.
    diagonal : ndarray of shape (n_nodes,), default=None
        ``d``, added to ``C``'s diagonal after the scaling; ``None`` is zeros.
    """

    name = "fixed"
    backward_by_default = True

    row_scale: np.ndarray | None = None
    col_scale: np.ndarray | None = None
    diagonal: np.ndarray | None = None

    def __init__(
        self,
        matrix: sp.csr_array,
        row_scale: np.ndarray | None = None,
        col_scale: np.ndarray | None = None,
        diagonal: np.ndarray | None = None,
    ):
        self.matrix = matrix
        n = matrix.shape[0]
        self.row_scale = _node_vector(row_scale, n, "row_scale")
        self.col_scale = (
            self.row_scale if col_scale is row_scale else _node_vector(col_scale, n, "col_scale")
        )
        self.diagonal = _node_vector(diagonal, n, "diagonal")

    def prepare(self, graph: Graph) -> None:  # noqa: D102
        self.features = graph.X
        self._graph = graph

    def _pattern_symmetric(self) -> bool:
        """Whether ``M`` is symmetric: the graph's own (cached) answer when ``M`` is its
        adjacency, checked once, when backward messages first need it."""
        graph = getattr(self, "_graph", None)
        if graph is not None and self.matrix is graph.A:
            return graph.is_symmetric
        if getattr(self, "_symmetric", None) is None:
            self._symmetric = is_symmetric(self.matrix)
        return self._symmetric

    def transposed(self) -> sp.csr_array:
        """``Mᵀ`` as CSR (``M`` itself when symmetric), whose rows `split` scales into rows of
        ``Cᵀ``; built when first asked for and kept."""
        if getattr(self, "_transposed", None) is None:
            M = self.matrix
            self._transposed = M if self._pattern_symmetric() else _transpose(M)
        return self._transposed

    def is_symmetric(self) -> bool:
        """Whether ``C`` itself is symmetric: ``M`` is, and ``l = r``."""
        if not self._pattern_symmetric():
            return False
        left, right = self.row_scale, self.col_scale
        if left is right:
            return True
        return left is not None and right is not None and np.array_equal(left, right)

    def split(self, nodes, position, backward, segment=None):  # noqa: D102
        left, right, M = self.row_scale, self.col_scale, self.matrix
        if not backward:
            return split_batch_edges(M, nodes, position, segment, left, right), None
        transposed = self.transposed()
        if transposed is M:  # rows of C and of Cᵀ from one gather of M's rows
            return split_batch_edges_and_transpose(M, nodes, position, segment, left, right)
        return (
            split_batch_edges(M, nodes, position, segment, left, right),
            split_batch_edges(transposed, nodes, position, segment, right, left),
        )

    def rows_of(
        self, rows: np.ndarray, transposed: bool = False, diagonal: bool = True
    ) -> sp.csr_array:
        """Rows of ``C`` (``transposed``: of ``Cᵀ``) as one CSR matrix, scaled, with sorted
        indices: what exact inference multiplies and a partition's rank stores of the
        convolution.

        Parameters
        ----------
        rows : ndarray of int
            Node ids.
        transposed : bool, default=False
            Rows of ``Cᵀ`` instead of ``C``.
        diagonal : bool, default=True
            Whether the separate diagonal's entries are included (else only the scaled rows
            of ``M``).

        Returns
        -------
        csr_array of shape (len(rows), n_nodes), dtype float32
        """
        rows = np.asarray(rows, dtype=np.int64)
        left, right = self.row_scale, self.col_scale
        source = self.matrix
        if transposed:
            left, right, source = right, left, self.transposed()
        contiguous = len(rows) > 0 and rows[-1] - rows[0] + 1 == len(rows)
        if contiguous and np.all(rows[1:] > rows[:-1]):
            M = source[int(rows[0]) : int(rows[-1]) + 1]  # a slice: no index gather
        else:
            M = source[rows]
        M = sp.csr_array(M, dtype=np.float32)
        if left is not None or right is not None:
            scale = None if left is None else np.repeat(left[rows], np.diff(M.indptr))
            if right is not None:
                scale = right[M.indices] if scale is None else scale * right[M.indices]
            M.data = M.data * scale  # M_ij · (l_i · r_j), as `scaled_entries`
        if diagonal and self.diagonal is not None:
            loops = sp.csr_array((self.diagonal[rows], (np.arange(len(rows)), rows)), shape=M.shape)
            M = sp.csr_array(M + loops, dtype=np.float32)
        M.sort_indices()
        return M

    def block(self, lo: int, hi: int, transposed: bool = False) -> sp.csr_array:
        """Rows ``lo:hi`` of ``C`` (``transposed``: of ``Cᵀ``): ``rows_of(arange(lo, hi))``.

        Parameters
        ----------
        lo, hi : int
            The rows.
        transposed : bool, default=False
            Rows of ``Cᵀ`` instead of ``C``.

        Returns
        -------
        csr_array of shape (hi - lo, n_nodes), dtype float32
        """
        return self.rows_of(np.arange(lo, hi), transposed)

    def inputs_of(
        self, rows: np.ndarray, device: torch.device, edges: BatchEdges | None = None
    ) -> Tensor:
        """The first layer's input rows ``(C X)[rows]``.

        Parameters
        ----------
        rows : ndarray
            Node ids.
        device : torch.device
        edges : BatchEdges, default=None
            The rows of ``C`` already gathered (`split`), if they are.

        Returns
        -------
        Tensor of shape (len(rows), n_features)
            Sparse CSR when ``X`` is sparse and the rows are mostly zeros, else dense.
        """
        X = self.features
        if sp.issparse(X):
            out = _aggregate(self.rows_of(rows), X)
            if sp.issparse(out):
                return input_rows(out, np.arange(len(rows)), device)
            return torch.from_numpy(out).to(device)
        # dense X: one weighted bag of rows of X per row of C (faster than SciPy's product)
        if edges is None:
            local, cols, vals = gather_rows(self.matrix, rows)
            if self.row_scale is not None or self.col_scale is not None:
                vals = scaled_entries(vals, local, cols, rows, self.row_scale, self.col_scale)
        else:
            cols, vals = edges.cols, edges.vals
        lengths = self.matrix.indptr[rows + 1] - self.matrix.indptr[rows]
        offsets = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(lengths[:-1], out=offsets[1:])
        out = F.embedding_bag(
            torch.from_numpy(cols),
            _read_only_view(X),
            torch.from_numpy(offsets),
            mode="sum",
            per_sample_weights=torch.from_numpy(np.asarray(vals, dtype=np.float32)),
        )
        if self.diagonal is not None:
            own = torch.from_numpy(np.asarray(X[rows], dtype=np.float32))
            out.addcmul_(torch.from_numpy(self.diagonal[rows])[:, None], own)
        return out.to(device)

    def batch(self, ctx, edges, tedges, backward) -> Part:  # noqa: D102
        part = Part(
            inputs=self.inputs_of(ctx.nodes, ctx.device, edges),
            intra=edges.intra_tensor(ctx.device),
        )
        if self.diagonal is not None:
            part.diagonal = torch.from_numpy(self.diagonal[ctx.nodes]).to(ctx.device)
        for level, table in enumerate(ctx.tables):
            k = table.n_codewords
            part.senders.append(codeword_sketch(edges, table.codes, k).to(ctx.device))
            if tedges is not None:
                te = tedges.keep_out(ctx.receivers) if ctx.restricted(level) else tedges
                sketch = codeword_sketch(te, table.grad_codes, k)
                part.receivers.append(sketch.to(ctx.device))
        return part

    @classmethod
    def n_channels(cls, attention):  # noqa: D102
        return 1

    @classmethod
    def messages(cls, part, level, x, initial, codebook, attention, network):  # noqa: D102
        m = spmm(part.intra, x, network.sparse_backend)  # C_in X_B
        if part.diagonal is not None:
            m = m + part.diagonal[:, None] * x
        sketch = part.senders[level] if part.senders else None
        if sketch is not None and sketch.nnz > 0:
            m = m + _out_of_batch(sketch, codebook.codewords, codebook)  # + C̃_out X̃
        return m, None

    @classmethod
    def blue_messages(cls, part, level, x, codebook, attention, channels, aux):  # noqa: D102
        if not part.receivers:
            return None
        c = channels.start
        grads = codebook.grad_codewords[c] * codebook.grad_trust[c]  # (P, k, D)
        return _out_of_batch(part.receivers[level], grads, codebook)  # (Cᵀ)_out R G̃

    @classmethod
    def gradient_channels(cls, messages, grad, lse):  # noqa: D102
        return [grad], []

    def exact_messages(self, layer, source, initial, rows, attention, network, device):  # noqa: D102
        if layer == 0:
            return self.inputs_of(rows, device)
        out = torch.from_numpy(np.asarray(self.rows_of(rows, diagonal=False) @ source))
        if self.diagonal is not None:
            own = torch.from_numpy(source[rows])
            out.addcmul_(torch.from_numpy(self.diagonal[rows])[:, None], own)
        return out.to(device)


class Attention(Convolution):
    """A learnable convolution: softmax attention over a mask, or over every pair of nodes.

    ``Attention(mask)`` is a `MaskedAttention`, ``Attention()`` (or ``Attention(None)``) a
    `GlobalAttention`. The scores come from the layer's ``attention`` modules (one
    ``AttentionConvolution`` per learnable convolution, in order). Messages aggregate the
    layer input before any weight, one per head: ``M^h_i = Σ_j α^h_ij x_j`` (b, H, f).

    Out-of-batch senders are their codewords' reconstructions, senders with equal codes one
    term weighted by their number (``log count`` added to the score); the first layer reads
    the raw features of the batch and of its most connected out-of-batch senders exactly and
    takes the other senders from the input codebook (whole-vector codewords of the raw
    features). The backward messages (``attention_blue``) use the receivers' codewords of
    ``x``, ``g = ∂ℓ/∂M``, ``⟨g, M⟩`` and the log normaliser; the attention parameters receive
    nothing from them.

    Parameters
    ----------
    mask : csr_array of shape (n_nodes, n_nodes) or None, default=None
        The pattern of allowed (receiver, sender) pairs, self-loops included (for example
        ``skvqgnn.graph.attention_mask(A)``); ``None`` stands for every pair of nodes.
    """

    learnable = True

    def __new__(cls, mask: sp.csr_array | None = None) -> Attention:  # noqa: D102
        if cls is Attention:
            cls = GlobalAttention if mask is None else MaskedAttention
        return super().__new__(cls)

    def __init__(self, mask: sp.csr_array | None = None):
        self.matrix = mask

    @property
    def mask(self) -> sp.csr_array | None:
        """The (receiver, sender) pattern; ``None`` for every pair."""
        return self.matrix

    @property
    def is_global(self) -> bool:
        """Whether this is global attention (no mask: every pair)."""
        return self.matrix is None

    @classmethod
    def n_channels(cls, attention):  # noqa: D102
        return attention.heads

    @classmethod
    def n_aux(cls, attention):  # noqa: D102
        return 2 * attention.heads  # ⟨g, M⟩ and the log normaliser, per head

    @classmethod
    def input_messages(cls, part, raw, b, attention, network):  # noqa: D102
        words = None
        groups = part.input_senders
        if groups is not None and len(groups.codes):
            words = network.input_codebook.lookup(groups.codes)  # (U, f0)
        return first_layer_attention(
            attention, raw(), part.input_pairs, groups, words, b, network.attention_p
        )

    @classmethod
    def messages(cls, part, level, x, initial, codebook, attention, network):  # noqa: D102
        groups = part.senders[level] if part.senders else None
        x_src = x
        if groups is not None and len(groups.codes):
            slices = torch.arange(codebook.n_slices, device=x.device)
            words = codebook.codewords[slices, groups.codes]
            x_src = torch.cat([x, codebook.merge(words)])
        edges, log_count = _sender_terms(part.intra, groups, x.shape[0], x_src is not x)
        return attend(attention, x, x_src, edges, log_count, dropout=network.attention_p)

    @classmethod
    def blue_messages(cls, part, level, x, codebook, attention, channels, aux):  # noqa: D102
        rec = part.receivers[level] if part.receivers else None
        if rec is None or len(rec.codes) == 0:
            return None
        x_rec, g_rec, a_rec = codebook.lookup_gradients(rec.codes)
        H = len(channels)
        inner, lse = range(aux.start, aux.start + H), range(aux.start + H, aux.stop)
        trust = codebook.grad_trust[channels.start : channels.stop]  # (H,)
        receivers = (
            x_rec,
            (g_rec[channels.start : channels.stop] * trust[:, None, None]).transpose(0, 1),
            a_rec[inner.start : inner.stop].T * trust,
            a_rec[lse.start : lse.stop].T,
        )
        edges = None if rec.rows is None else (rec.rows, rec.cols)
        return attention_blue(attention, x, receivers, rec.log_count, edges)

    @classmethod
    def gradient_channels(cls, messages, grad, lse):  # noqa: D102
        # (b, H, f): one channel per head, then ⟨g, M⟩ and the log normaliser per head
        return list(grad.unbind(1)), [(grad * messages.detach()).sum(-1).T, lse.T]


class MaskedAttention(Attention):
    """Attention over the pairs of a mask (GAT: ``N(i) ∪ {i}``); see `Attention`.

    Parameters
    ----------
    mask : csr_array of shape (n_nodes, n_nodes)
        The allowed (receiver, sender) pairs, self-loops included.
    """

    name = "attention"

    def exact_senders(self, edges):  # noqa: D102
        return edges.out_nodes

    def batch(self, ctx, edges, tedges, backward) -> Part:  # noqa: D102
        b, halo, device = len(ctx.nodes), ctx.halo, ctx.device
        # first layer: the senders in the halo exactly, the others by their input codes
        at = np.minimum(np.searchsorted(halo, edges.out_nodes), max(len(halo) - 1, 0))
        exact = halo[at] == edges.out_nodes if len(halo) else np.zeros(len(at), dtype=bool)
        rows = np.concatenate([edges.in_rows, edges.out_rows[exact]])
        cols = np.concatenate([edges.in_cols, b + at[exact]])
        part = Part(
            intra=(_long(edges.in_rows, device), _long(edges.in_cols, device)),
            input_pairs=(_long(rows, device), _long(cols, device)),
        )
        if ctx.input_table is not None:
            rest = ~exact
            part.input_senders = _groups(
                edges.out_rows[rest], edges.out_nodes[rest], ctx.input_table.codes, device
            )
        for level, table in enumerate(ctx.tables):
            part.senders.append(_groups(edges.out_rows, edges.out_nodes, table.codes, device))
            if tedges is not None:
                te = tedges.keep_out(ctx.receivers) if ctx.restricted(level) else tedges
                part.receivers.append(_groups(te.out_rows, te.out_nodes, table.grad_codes, device))
        return part

    def exact_messages(self, layer, source, initial, rows, attention, network, device):  # noqa: D102
        local, cols, _ = gather_rows(self.matrix, rows)
        senders, inverse = np.unique(cols, return_inverse=True)
        edges = (_long(local, device), _long(inverse, device))
        if layer == 0:  # receivers first, then the senders
            x = input_rows(source, np.concatenate([rows, senders]), device)
            edges = (edges[0], edges[1] + len(rows))
            p = network.attention_p
            return first_layer_attention(attention, x, edges, None, None, len(rows), p)
        x_dst, x_src = dense_rows(source, rows, device), dense_rows(source, senders, device)
        return attend(attention, x_dst, x_src, edges)[0]


class GlobalAttention(Attention):
    """Attention over every pair of nodes (a graph transformer's global attention); see
    `Attention`. Out-of-batch senders are every codeword, weighted by the out-of-batch nodes it
    stands for, so its codewords are whole vectors.

    Parameters
    ----------
    mask : None, default=None
        No mask: every pair.
    """

    name = "global"
    whole_vectors = True
    every_pair = True

    def batch(self, ctx, edges, tedges, backward) -> Part:  # noqa: D102
        part, device, nodes = Part(), ctx.device, ctx.nodes
        if ctx.input_table is not None:
            seen = np.concatenate([nodes, ctx.halo])
            t = ctx.input_table
            part.input_senders = _global_groups(
                _outside(t.codes, t.usage[0], seen, t.n_codewords), device
            )
        for level, table in enumerate(ctx.tables):
            k = table.n_codewords
            part.senders.append(
                _global_groups(_outside(table.codes, table.usage[0], nodes, k), device)
            )
            if not backward:
                continue
            marked, usage = nodes, table.grad_usage[0]
            if ctx.restricted(level):
                marked = nodes[ctx.receivers[nodes]]
                usage = np.bincount(table.grad_codes[np.flatnonzero(ctx.receivers), 0], minlength=k)
            part.receivers.append(
                _global_groups(_outside(table.grad_codes, usage, marked, k), device)
            )
        return part

    def exact_messages(self, layer, source, initial, rows, attention, network, device):  # noqa: D102
        step = max(1, _PAIRS // (len(rows) * attention.heads))
        n = source.shape[0]
        senders = (
            dense_rows(source, np.arange(c, min(c + step, n)), device) for c in range(0, n, step)
        )
        project = layer == 0 and hasattr(attention, "value")
        x_dst = dense_rows(source, rows, device)
        return attend_chunked(attention, x_dst, senders, project)[0]


#: The built-in kinds by name.
KINDS: dict[str, type[Convolution]] = {
    kind.name: kind for kind in (Identity, Initial, Fixed, MaskedAttention, GlobalAttention)
}


def as_convolution(entry: Any) -> Convolution:
    """A backbone's list entry as a `Convolution`: ``None`` is the `Identity`, a sparse matrix
    a `Fixed` convolution; a `Convolution` stays as it is."""
    if isinstance(entry, Convolution):
        return entry
    if entry is None:
        return Identity()
    if sp.issparse(entry):
        return Fixed(sp.csr_array(entry))
    raise TypeError(
        "a backbone's convolutions(A) lists skvqgnn.convolutions.Convolution instances "
        "(Identity(), Fixed(C), Attention(mask), Attention()), None or sparse matrices; got "
        f"{type(entry).__name__}"
    )


# -- one graph's convolutions ----------------------------------------------------------------------
class GraphData:
    """The convolutions of one backbone on one graph, prepared on the host (cached on the
    ``Graph`` by the estimators).

    Parameters
    ----------
    graph : Graph
    backbone : Backbone
        Its ``convolutions(graph.A)`` are prepared once.

    Attributes
    ----------
    convolutions : list of Convolution
    kinds : list of type
        Their classes, which the network is built from.
    """

    def __init__(self, graph: Graph, backbone: Any):
        self.graph = graph
        self.n_nodes = graph.n_nodes
        self.convolutions = [as_convolution(c) for c in backbone.convolutions(graph.A)]
        for conv in self.convolutions:
            conv.prepare(graph)
        self.kinds = [type(conv) for conv in self.convolutions]


def _read_only_view(X: np.ndarray) -> Tensor:
    """``X`` as a tensor without a copy, also when it is read-only (a memory-mapped file opened
    with ``mmap_mode="r"``): torch warns that it may not be written to, which it never is here."""
    if X.flags.writeable:
        return torch.from_numpy(X)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(X)


def _transpose(M: sp.csr_array) -> sp.csr_array:
    Mt = M.T.tocsr()
    Mt.sort_indices()
    return Mt


def _aggregate(C: sp.csr_array, X: np.ndarray | sp.csr_array) -> np.ndarray | sp.csr_array:
    """``C X``, the first layer's input of a fixed convolution (CSR unless it is dense)."""
    out = C @ X
    if sp.issparse(out):
        out = sp.csr_array(out, dtype=np.float32)
        if out.nnz > 0.3 * out.shape[0] * out.shape[1]:
            return np.ascontiguousarray(out.toarray())
        out.sort_indices()
        return out
    return np.ascontiguousarray(out, dtype=np.float32)


def make_batch(
    data: GraphData,
    nodes: np.ndarray,
    tables: Sequence[AssignmentTable],
    device: torch.device,
    backward: Sequence[bool] | bool = False,
    receivers: np.ndarray | None = None,
    input_table: AssignmentTable | None = None,
    position: np.ndarray | None = None,
    segment: np.ndarray | None = None,
) -> Batch:
    """Gather the host structures of batch ``nodes`` and move them to ``device``.

    With ``segment``, ``nodes`` are several batches at once, each row's messages from rows of
    another segment out-of-batch: the rows' outputs are those of each batch run on its own, at
    the cost of one call (inference runs its batches so). Networks of fixed convolutions
    only: the out-of-batch terms of a learnable convolution depend on its whole batch.

    Parameters
    ----------
    data : GraphData
    nodes : ndarray of shape (b,)
        The batch's node ids.
    tables : list of AssignmentTable
        Per VQ layer (those below the layer a forward stops at, or all), the codes of every
        node; empty in full-graph mode.
    device : torch.device
    backward : bool or sequence of bool, default=False
        Per convolution (or for all), whether to add what its backward messages need.
    receivers : ndarray of shape (n_nodes,), bool, default=None
        The nodes with a loss term: the output layer's backward messages come from those only.
    input_table : AssignmentTable, default=None
        Input codes of the raw features, for the first layer of learnable convolutions;
        without it every sender must be in the batch (full graph).
    position : ndarray of shape (n_nodes,), int32, default=None
        Scratch space, -1 everywhere, left so; allocated when not given.
    segment : ndarray of shape (b,), int, default=None
        The batch each node belongs to; ``None``: one batch.
    """
    convs = data.convolutions
    if segment is not None and any(conv.learnable for conv in convs):
        raise ValueError("several batches at once (segment) need a network without attention")
    flags = [backward] * len(convs) if isinstance(backward, bool) else list(backward)
    b = len(nodes)
    if position is None:
        position = np.full(data.n_nodes, -1, dtype=np.int32)
    position[nodes] = np.arange(b)
    try:
        split = [
            conv.split(nodes, position, f, segment) for conv, f in zip(convs, flags, strict=True)
        ]
    finally:
        position[nodes] = -1
    raw, halo = None, np.zeros(0, dtype=np.int64)
    if any(conv.learnable for conv in convs):
        wanted = [conv.exact_senders(e) for conv, (e, _) in zip(convs, split, strict=True)]
        halo = _exact_halo(wanted, input_table, budget=b)
        raw = input_rows(data.graph.X, np.concatenate([nodes, halo]), device)
    ctx = BatchContext(nodes, halo, tables, input_table, receivers, device)
    parts = [
        conv.batch(ctx, e, te, f) for conv, (e, te), f in zip(convs, split, flags, strict=True)
    ]
    return Batch(
        nodes=torch.from_numpy(nodes),
        parts=parts,
        raw=raw,
        backward=any(flags) and len(tables) > 0,
    )


def _exact_halo(
    wanted: list[np.ndarray], input_table: AssignmentTable | None, budget: int
) -> np.ndarray:
    """The out-of-batch senders whose raw features the first layer reads exactly (sorted ids):
    all of them without an input codebook; else at most ``budget``, those with the most edges
    into the batch (the rest come from their input codewords)."""
    wanted = [w for w in wanted if len(w)]
    if not wanted:
        return np.zeros(0, dtype=np.int64)
    senders, counts = np.unique(np.concatenate(wanted), return_counts=True)
    if input_table is None or len(senders) <= budget:
        return senders
    return np.sort(senders[np.argsort(-counts, kind="stable")[:budget]])


def _outside(codes: np.ndarray, usage: np.ndarray, inside: np.ndarray, k: int) -> np.ndarray:
    """Nodes per whole-vector codeword (k,) outside the batch rows ``inside``, given the
    codeword's ``usage`` (k,) over all the nodes counted."""
    return usage - np.bincount(codes[inside, 0], minlength=k)


def _groups(rows: np.ndarray, nodes: np.ndarray, codes: np.ndarray, device: torch.device) -> Groups:
    rows, cols, counts, group_codes = group_by_codes(rows, nodes, codes)
    return Groups(
        rows=_long(rows, device),
        cols=_long(cols, device),
        log_count=torch.from_numpy(np.log(counts).astype(np.float32)).to(device),
        codes=_long(group_codes, device),
    )


def _global_groups(counts: np.ndarray, device: torch.device) -> Groups:
    """Every codeword standing for ``counts`` (k,) out-of-batch nodes, empty ones left out."""
    words = np.flatnonzero(counts > 0)
    return Groups(
        rows=None,
        cols=None,
        log_count=torch.from_numpy(np.log(counts[words]).astype(np.float32)).to(device),
        codes=_long(words[:, None], device),
    )


# -- device helpers --------------------------------------------------------------------------------
def _out_of_batch(sketch: SketchBags, words: Tensor, cb: ProductCodebook) -> Tensor:
    """Sketch (P·b, P·k) times stacked codewords (P, k, D) -> (b, f)."""
    P, k, D = words.shape
    out = sketch_product(sketch, words.reshape(P * k, D))
    return cb.merge(out.reshape(P, -1, D).transpose(0, 1))


def _sender_terms(
    intra: tuple[Tensor, Tensor] | None,
    groups: Groups | None,
    b: int,
    grouped: bool,
) -> tuple[tuple[Tensor, Tensor] | None, Tensor | None]:
    """The (rows, cols) pairs and log counts of a learnable convolution's senders: the ``b``
    rows of the batch's inputs first, then, when ``grouped``, the out-of-batch ``groups``
    (``None`` pairs: global attention, every receiver meets every sender)."""
    if intra is None:  # global attention
        log_count = (
            torch.cat([groups.log_count.new_zeros(b), groups.log_count]) if grouped else None
        )
        return None, log_count
    rows, cols = intra
    if not grouped:
        return (rows, cols), None
    log_count = torch.cat([groups.log_count.new_zeros(len(rows)), groups.log_count])
    return (torch.cat([rows, groups.rows]), torch.cat([cols, groups.cols + b])), log_count


def first_layer_attention(
    conv: AttentionConvolution,
    x: Tensor,
    intra: tuple[Tensor, Tensor] | None,
    groups: Groups | None,
    words: Tensor | None,
    n_receivers: int,
    dropout: float,
) -> Tensor:
    """A learnable convolution's first layer into the first ``n_receivers`` rows of ``x``, the
    raw features (dense, or sparse) of the receivers and of the senders read exactly (the
    pairs ``intra``, or every pair for global attention); out-of-batch ``groups`` of input
    codewords ``words`` (U, f0) are further senders. Over projected values when the
    convolution has them (cheaper for wide raw features)."""
    edges, log_count = _sender_terms(intra, groups, x.shape[0], words is not None)
    if hasattr(conv, "value"):
        parts = [x] if words is None else [x, words]
        keys = torch.cat([conv.key(v) for v in parts])
        values = torch.cat([conv.value(v) for v in parts])
        queries = conv.query(x)[:n_receivers]
        return attend(conv, n_receivers, None, edges, log_count, values, dropout, queries, keys)[0]
    rows = dense(x)
    x_src = rows if words is None else torch.cat([rows, words])
    return attend(conv, rows[:n_receivers], x_src, edges, log_count, dropout=dropout)[0]


def _node_vector(values: Any, n: int, name: str) -> np.ndarray | None:
    """A float32 vector of one value per node, or ``None``."""
    if values is None:
        return None
    values = np.asarray(values, dtype=np.float32)
    if values.shape != (n,):
        raise ValueError(f"{name} must hold one value per node ({n}), got shape {values.shape}")
    return values
