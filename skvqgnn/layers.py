"""Backbones and the VQ-approximated message passing of one mini-batch (DESIGN §1, §4).

A backbone is one small class: the convolutions it aggregates with (computed once on the host
from the full graph) and the layer that combines the aggregated messages. A convolution is fixed
(a CSR matrix ``C^(s)``; GCN, SAGE, GIN) or learnable (an ``Attention``: softmax of a learned
score over a mask, GAT, or over every pair of nodes, the transformer's global attention).

Fixed convolutions, for a batch ``B`` and layer ``l ≥ 1`` (Eq. 6 and 7):

    M_B^(s) ≈ C_in^(s) X_B + C̃_out^(s) X̃,        ∇X_B += (C^(s)ᵀ)_out R G̃^(s),

with feature codewords ``X̃`` and gradient codewords ``G̃`` of ``∂ℓ/∂M^(s)`` (before ``W``), so
the blue term needs no ``W^(s)ᵀ`` factor and reaches ``X_B`` only.

Learnable convolutions ``M^h_i = Σ_j α^h_ij x_j``: intra-batch senders are exact; out-of-batch
senders are their reconstructions from the codewords, and senders with identical codes are one
term weighted by their number (``log count`` added to the score). The backward messages to batch
senders from out-of-batch receivers use the receivers' codewords of ``x``, ``g = ∂ℓ/∂M``,
``⟨g, M⟩`` and the log normaliser (``attention_blue``). Attention parameters receive gradient from
every forward term, codeword senders included, and nothing from the backward messages.

The first layer aggregates the fixed input features: ``C^(s) X`` is computed once on the host, so
a fixed convolution's first layer is exact. A learnable convolution's first layer takes its
out-of-batch senders from the input codebook, whole-vector codewords of the raw features fitted
once before training, so that a step never gathers the raw features of a neighbourhood.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .graph import attention_mask, gcn_norm, mean_norm
from .sketch import SketchBags, sketch_product, spmm
from .vq import ProductCodebook

__all__ = [
    "Attention",
    "AttentionConvolution",
    "Backbone",
    "BACKBONES",
    "Batch",
    "DotProductAttention",
    "GAT",
    "GATAttention",
    "GCN",
    "GIN",
    "LinearCombination",
    "SAGE",
    "Transformer",
    "VQGNN",
]


class LinearCombination(nn.Module):
    """``Z = Σ_s M^(s) W^(s) + b``: one linear map per convolution, one shared bias.

    The default layer of a ``Backbone``. Its ``forward`` takes the list of messages, one
    (b, in_features) tensor (dense or sparse COO) per convolution.

    Parameters
    ----------
    in_features : int
        Width of the layer input (and of each message).
    out_features : int
        Width of the layer output.
    n_convolutions : int
        Number of convolutions, hence of messages and linear maps.
    """

    def __init__(self, in_features: int, out_features: int, n_convolutions: int):
        super().__init__()
        self.linears = nn.ModuleList(
            nn.Linear(in_features, out_features, bias=(s == n_convolutions - 1))
            for s in range(n_convolutions)
        )

    def forward(self, messages: list[Tensor]) -> Tensor:
        z = _linear(self.linears[0], messages[0])
        for linear, m in zip(self.linears[1:], messages[1:], strict=True):
            z = z + _linear(linear, m)
        return z


def is_sparse(x: Tensor) -> bool:
    """Whether ``x`` is a sparse tensor of any layout (COO or CSR)."""
    return x.layout != torch.strided


def dense(x: Tensor) -> Tensor:
    """``x`` as a dense tensor."""
    return x.to_dense() if is_sparse(x) else x


def _linear(linear: nn.Linear, x: Tensor) -> Tensor:
    """``linear(x)`` for a dense or sparse (COO or CSR) ``x``."""
    if not is_sparse(x):
        return linear(x)
    out = x @ linear.weight.T
    return out if linear.bias is None else out + linear.bias


def _matmul(x: Tensor, w: Tensor) -> Tensor:
    return x @ w


def sparse_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on the stored values of a sparse (COO or CSR) tensor, or plain dropout on a
    dense one."""
    if not is_sparse(x):
        return F.dropout(x, p, training)
    if not training or p == 0:
        return x
    if x.layout == torch.sparse_csr:
        values = F.dropout(x.values(), p, True)
        return torch.sparse_csr_tensor(
            x.crow_indices(), x.col_indices(), values, x.shape, check_invariants=False
        )
    return torch.sparse_coo_tensor(
        x.indices(),
        F.dropout(x.values(), p, True),
        x.shape,
        is_coalesced=True,
        check_invariants=False,
    )


@dataclass(frozen=True)
class Attention:
    """A learnable convolution in a backbone's list: softmax attention over ``mask``.

    The scores come from the layer's ``attention`` modules (one ``AttentionConvolution`` per
    ``Attention``, in order).

    Parameters
    ----------
    mask : csr_array of shape (n_nodes, n_nodes) or None, default=None
        The pattern of allowed (receiver, sender) pairs, self-loops included (for example
        ``skvqgnn.graph.attention_mask(A)``); ``None`` stands for every pair of nodes (global
        attention).
    """

    mask: sp.csr_array | None = None

    @property
    def is_global(self) -> bool:
        """Whether this is global attention (``mask is None``)."""
        return self.mask is None


def kind_of(conv: sp.csr_array | Attention | None) -> str:
    """``"identity"``, ``"fixed"``, ``"attention"`` (masked) or ``"global"``."""
    if conv is None:
        return "identity"
    if isinstance(conv, Attention):
        return "global" if conv.is_global else "attention"
    return "fixed"


class AttentionConvolution(nn.Module):
    """A learnable convolution ``C^h_ij = softmax_j score(query_h(x_i), key_h(x_j))``, per head.

    Subclasses set ``heads`` and implement ``query`` and ``key`` ((m, f) -> (m, H, d)) and
    ``score``, which maps broadcastable (..., H, d) pairs to (..., H). The messages it yields are
    ``M^h_i = Σ_j C^h_ij x_j`` (the layer input, aggregated before any weight), one per head.

    A subclass may also define ``value`` ((m, f) -> (m, H, d)): in the first layer, which has no
    codebook, the messages are then ``Σ_j C^h_ij value_h(x_j)`` (cheaper for wide raw features),
    and the layer receives those instead.
    """

    heads: int = 1

    def query(self, x: Tensor) -> Tensor:
        """Per-head queries of the receivers.

        Parameters
        ----------
        x : Tensor of shape (m, f)
            Receiver representations: dense, except in the first layer of a convolution that
            defines ``value``, which gets the raw features as they are (sparse COO if sparse).

        Returns
        -------
        Tensor of shape (m, H, d)
        """
        raise NotImplementedError

    def key(self, x: Tensor) -> Tensor:
        """Per-head keys of the senders.

        Parameters
        ----------
        x : Tensor of shape (m, f)
            Sender representations: dense, except in the first layer of a convolution that
            defines ``value``, which gets the raw features as they are (sparse COO if sparse).

        Returns
        -------
        Tensor of shape (m, H, d)
        """
        raise NotImplementedError

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        """Attention scores ``e`` (before the softmax) of (receiver, sender) pairs.

        Parameters
        ----------
        q : Tensor of shape (..., H, d)
            Queries, broadcastable against ``k``.
        k : Tensor of shape (..., H, d)
            Keys.

        Returns
        -------
        Tensor of shape (..., H)
        """
        raise NotImplementedError

    def dense_score(self, q: Tensor, k: Tensor) -> Tensor:
        """Scores of every pair: q (b, H, d), k (m, H, d) -> (b, m, H).

        Override it with a faster all-pairs product (global attention uses it); the default
        broadcasts ``score``.

        Parameters
        ----------
        q : Tensor of shape (b, H, d)
            Queries of the receivers.
        k : Tensor of shape (m, H, d)
            Keys of the senders.

        Returns
        -------
        Tensor of shape (b, m, H)
        """
        return self.score(q.unsqueeze(1), k.unsqueeze(0))


class GATAttention(AttentionConvolution):
    """GAT scores ``LeakyReLU(a_dstᵀ W_h x_i + a_srcᵀ W_h x_j)`` (Veličković et al.)."""

    def __init__(self, in_features: int, head_features: int, heads: int, negative_slope=0.2):
        super().__init__()
        self.heads = heads
        self.negative_slope = negative_slope
        self.weight = nn.Parameter(torch.empty(heads, in_features, head_features))
        self.att_src = nn.Parameter(torch.empty(heads, head_features))
        self.att_dst = nn.Parameter(torch.empty(heads, head_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for w in (self.weight, self.att_src.unsqueeze(-1), self.att_dst.unsqueeze(-1)):
            nn.init.xavier_uniform_(w)

    def _project(self, x: Tensor, att: Tensor) -> Tensor:
        return _matmul(x, torch.einsum("hfd,hd->fh", self.weight, att)).unsqueeze(-1)  # (m, H, 1)

    def query(self, x: Tensor) -> Tensor:
        return self._project(x, self.att_dst)

    def key(self, x: Tensor) -> Tensor:
        return self._project(x, self.att_src)

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        return F.leaky_relu(q + k, self.negative_slope).squeeze(-1)

    def value(self, x: Tensor) -> Tensor:
        H, f, d = self.weight.shape
        return _matmul(x, self.weight.permute(1, 0, 2).reshape(f, H * d)).reshape(-1, H, d)


class DotProductAttention(AttentionConvolution):
    """Scaled dot-product scores ``(W_Q,h x_i)·(W_K,h x_j) / √d`` (Vaswani et al.)."""

    def __init__(self, in_features: int, key_features: int, heads: int):
        super().__init__()
        self.heads = heads
        self.key_features = key_features
        self.w_query = nn.Linear(in_features, heads * key_features, bias=False)
        self.w_key = nn.Linear(in_features, heads * key_features, bias=False)

    def query(self, x: Tensor) -> Tensor:
        return self.w_query(x).reshape(x.shape[0], self.heads, -1)

    def key(self, x: Tensor) -> Tensor:
        return self.w_key(x).reshape(x.shape[0], self.heads, -1)

    def score(self, q: Tensor, k: Tensor) -> Tensor:
        return (q * k).sum(-1) / math.sqrt(self.key_features)

    def dense_score(self, q: Tensor, k: Tensor) -> Tensor:
        return torch.einsum("bhd,mhd->bmh", q, k) / math.sqrt(self.key_features)


def attend(
    conv: AttentionConvolution,
    x_dst: Tensor | int,
    x_src: Tensor | None,
    edges: tuple[Tensor, Tensor] | None = None,
    log_count: Tensor | None = None,
    values: Tensor | None = None,
    dropout: float = 0.0,
    queries: Tensor | None = None,
    keys: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Softmax aggregation ``M^h_i = Σ_j α^h_ij x_j`` of senders ``x_src`` into ``x_dst``.

    ``values`` (m, H, d), when given, are aggregated per head instead of ``x_src``. An integer
    ``x_dst = b`` means the first ``b`` senders are the receivers. ``queries`` (b, H, d) and
    ``keys`` (m, H, d) may be given precomputed (senders whose parts are projected apart, such
    as sparse feature rows and dense codewords); ``x_src`` is then needed only without
    ``values``.

    ``edges`` = (receiver rows, sender columns), each (E,); ``None`` means every pair. A sender
    term may stand for several nodes with the same features (a codeword): ``log_count`` ((E,), or
    (m,) for every pair) adds the log of that multiplicity to its score, which weighs it by its
    count in both numerator and denominator. Scores are shifted by their row maximum before
    ``exp`` (max-subtraction), so no weight exceeds 1. ``dropout`` > 0 zeroes each weight
    ``α^h_ij`` with that probability and rescales the others (attention dropout, as in GAT); a
    codeword term is dropped or kept as a whole. The log normaliser is that of the weights
    before dropout. Masked aggregation holds O(E·H) weights, never an (E, H, f) tensor.

    Returns the messages (b, H, f) and the log normaliser of each row (b, H).
    """
    q = queries
    if q is None:
        q = conv.query(x_src)[:x_dst] if isinstance(x_dst, int) else conv.query(x_dst)
    k = conv.key(x_src) if keys is None else keys  # (m, H, d)
    b, H = q.shape[0], q.shape[1]
    if edges is None:
        s = conv.dense_score(q, k)  # (b, m, H)
        if log_count is not None:
            s = s + log_count[None, :, None]
        lse = torch.logsumexp(s, dim=1)  # (b, H)
        alpha = torch.exp(s - lse.unsqueeze(1))
        if dropout > 0:
            alpha = F.dropout(alpha, dropout, True)
        if values is not None:
            return torch.einsum("bmh,mhd->bhd", alpha, values), lse
        return torch.einsum("bmh,mf->bhf", alpha, x_src), lse
    rows, cols = edges
    s = conv.score(q[rows], k[cols])  # (E, H)
    if log_count is not None:
        s = s + log_count.unsqueeze(-1)
    index = rows.unsqueeze(-1).expand(-1, H)
    peak = torch.full((b, H), -torch.inf, dtype=s.dtype, device=s.device)
    peak = peak.scatter_reduce(0, index, s.detach(), "amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    w = torch.exp(s - peak[rows])  # (E, H), at most 1
    den = torch.zeros(b, H, dtype=s.dtype, device=s.device).index_add(0, rows, w)
    den = den.clamp_min(torch.finfo(s.dtype).tiny)
    alpha = w / den[rows]
    if dropout > 0:
        alpha = F.dropout(alpha, dropout, True)
    return segment_sum(rows, cols, alpha, x_src if values is None else values, b), peak + torch.log(
        den
    )


def segment_sum(rows: Tensor, cols: Tensor, weights: Tensor, src: Tensor, b: int) -> Tensor:
    """``out[i, h] = Σ_{e: rows[e] = i} weights[e, h] · src[cols[e]]`` (b, H, f).

    ``src`` is (m, f), shared by the heads, or (m, H, f). One weighted bag sum per head
    (``embedding_bag``), so memory is O(E·H + m·f): the (E, H, f) tensor of the terms is never
    built, and the gradient reaches ``weights`` and ``src``.
    """
    if len(rows) > 1 and bool((rows[1:] < rows[:-1]).any()):
        order = torch.argsort(rows, stable=True)
        rows, cols, weights = rows[order], cols[order], weights[order]
    counts = torch.bincount(rows, minlength=b)
    offsets = torch.cumsum(counts, 0) - counts
    heads = []
    for h in range(weights.shape[1]):
        table = src if src.dim() == 2 else src[:, h].contiguous()
        heads.append(
            F.embedding_bag(
                cols, table, offsets, mode="sum", per_sample_weights=weights[:, h].contiguous()
            )
        )
    return torch.stack(heads, 1)


def attend_chunked(
    conv: AttentionConvolution, x_dst: Tensor, senders: Iterator[Tensor], project: bool = False
) -> tuple[Tensor, Tensor]:
    """``attend`` over every pair, with the senders streamed in chunks (log-sum-exp merge);
    ``project`` aggregates the convolution's ``value`` of the senders."""
    M = lse = None
    for x_src in senders:
        m_c, lse_c = attend(conv, x_dst, x_src, values=conv.value(x_src) if project else None)
        if M is None:
            M, lse = m_c, lse_c
            continue
        total = torch.logaddexp(lse, lse_c)
        M = M * torch.exp(lse - total).unsqueeze(-1) + m_c * torch.exp(lse_c - total).unsqueeze(-1)
        lse = total
    return M, lse


def attention_blue(
    conv: AttentionConvolution,
    x: Tensor,
    receivers: tuple[Tensor, Tensor, Tensor, Tensor],
    log_count: Tensor,
    edges: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Eq. 7's out-of-batch gradient for the batch senders ``x`` (b, f) of a learnable convolution.

    A receiver ``i`` outside the batch, with messages ``M_i`` and gradient ``g_i = ∂ℓ/∂M_i``, sends
    back to sender ``j``

        ∂ℓ/∂x_j += α_ij g_i + α_ij (⟨g_i, x_j⟩ − ⟨g_i, M_i⟩) ∂e_ij/∂x_j,

    the value path and the path through the score ``e_ij`` and the row normaliser. This is the
    gradient in ``x_j`` of ``Σ α_ij (⟨g_i, x_j⟩ − ⟨g_i, M_i⟩)`` with ``α_ij = exp(e_ij − lse_i)``
    and everything but ``x_j`` held fixed, which is how it is computed: the receivers enter
    through their codewords, ``receivers`` = (features (U, f), gradients (U, H, f),
    ⟨g, M⟩ (U, H), log normalisers (U, H)), each group weighted by ``log_count``. ``edges`` =
    (batch senders, receiver groups) or ``None`` for every pair. The parameters receive nothing.
    """
    x_rec, g_rec, inner_rec, lse_rec = receivers
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        q = conv.query(x_rec).detach()  # (U, H, d)
        k = conv.key(x)  # (b, H, d)
        if edges is None:
            s = conv.dense_score(q, k) - lse_rec.unsqueeze(1)  # (U, b, H)
            alpha = torch.exp(s.clamp_max(0.0) + log_count[:, None, None])
            inner = torch.einsum("uhf,bf->ubh", g_rec, x) - inner_rec.unsqueeze(1)
        else:
            senders, groups = edges
            s = conv.score(q[groups], k[senders]) - lse_rec[groups]  # (E, H)
            alpha = torch.exp(s.clamp_max(0.0) + log_count.unsqueeze(-1))
            inner = torch.einsum("ehf,ef->eh", g_rec[groups], x[senders]) - inner_rec[groups]
        (grad,) = torch.autograd.grad((alpha * inner).sum(), x)
    return grad


class Backbone:
    """A GNN family: its convolutions and its layer update.

    ``convolutions(A)`` lists, from the full graph, what each layer aggregates with: ``None`` for
    the identity (a root weight, no out-of-batch messages), a CSR matrix for a fixed convolution
    ``C^(s)``, or an ``Attention`` for a learnable one. ``layer(in, out, last=...)`` builds the
    module that maps the list of messages (one (b, f) tensor per fixed or identity convolution,
    one (b, H, f) tensor per ``Attention``) to the layer output; a layer of a backbone with
    ``Attention`` entries carries ``attention``, an ``nn.ModuleList`` with one
    ``AttentionConvolution`` per entry, in order.

    The default layer is ``LinearCombination`` over ``n_convolutions`` messages.
    """

    name: str = ""
    n_convolutions: int = 1

    def convolutions(self, A: sp.csr_array) -> list[sp.csr_array | Attention | None]:
        """What each layer aggregates with, computed once from the full graph.

        Parameters
        ----------
        A : csr_array of shape (n_nodes, n_nodes)
            The validated adjacency (float32, sorted indices); row ``i`` lists the nodes ``i``
            receives messages from.

        Returns
        -------
        list
            One entry per convolution: ``None`` (identity), a CSR matrix ``C^(s)`` (fixed) or an
            ``Attention`` (learnable).
        """
        raise NotImplementedError

    def layer(self, in_features: int, out_features: int, *, first: bool, last: bool) -> nn.Module:
        """The module of one layer: list of messages -> (b, out_features).

        Parameters
        ----------
        in_features : int
            Width of the layer input.
        out_features : int
            Width of the layer output.
        first : bool
            Whether it is the first layer (which aggregates the raw features).
        last : bool
            Whether it is the output layer.

        Returns
        -------
        torch.nn.Module
            ``LinearCombination`` over ``n_convolutions`` messages by default.
        """
        return LinearCombination(in_features, out_features, self.n_convolutions)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


class GCN(Backbone):
    """Kipf & Welling: ``C = D̃^-½ (A + I) D̃^-½`` (symmetric for undirected graphs)."""

    name = "gcn"

    def convolutions(self, A: sp.csr_array) -> list[sp.csr_array | Attention | None]:
        return [gcn_norm(A)]


class SAGE(Backbone):
    """GraphSAGE-mean: ``C¹ = I`` (root weight) and ``C² = D⁻¹ A`` (not symmetric)."""

    name = "sage"
    n_convolutions = 2

    def convolutions(self, A: sp.csr_array) -> list[sp.csr_array | Attention | None]:
        return [None, mean_norm(A)]


class GINLayer(nn.Module):
    """``MLP((1 + ε) x_i + Σ_j A_ij x_j)`` with a learnable ``ε`` (Xu et al.)."""

    def __init__(self, in_features: int, out_features: int, hidden_features: int):
        super().__init__()
        self.eps = nn.Parameter(torch.zeros(()))
        self.lin1 = nn.Linear(in_features, hidden_features)
        self.lin2 = nn.Linear(hidden_features, out_features)

    def forward(self, messages: list[Tensor]) -> Tensor:
        root, neighbours = messages
        no_bias = self.lin1.weight.T
        h = (1 + self.eps) * _matmul(root, no_bias) + _matmul(neighbours, no_bias) + self.lin1.bias
        return self.lin2(F.relu(h))


class GIN(Backbone):
    """GIN: ``C = (1 + ε) I + A`` (sum aggregation) with an MLP update."""

    name = "gin"

    def convolutions(self, A: sp.csr_array) -> list[sp.csr_array | Attention | None]:
        return [None, sp.csr_array(A, dtype=np.float32)]

    def layer(self, in_features: int, out_features: int, *, first: bool, last: bool) -> nn.Module:
        return GINLayer(in_features, out_features, in_features if last else out_features)


class GATLayer(nn.Module):
    """Multi-head graph attention: heads concatenated (hidden layers) or averaged (output).

    In the first layer the messages arrive projected (``GATAttention.value``); later layers get
    the aggregated inputs and project them here.
    """

    def __init__(
        self, in_features: int, out_features: int, heads: int, concat: bool, first: bool = False
    ):
        super().__init__()
        if concat and out_features % heads:
            raise ValueError(
                f"a GAT hidden layer of width {out_features} cannot be split into heads={heads} "
                "heads: choose hidden_layer_sizes divisible by heads"
            )
        self.concat = concat
        self.first = first
        width = out_features // heads if concat else out_features
        self.attention = nn.ModuleList([GATAttention(in_features, width, heads)])
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, messages: list[Tensor]) -> Tensor:
        (M,) = messages  # (b, H, f), or (b, H, d) already projected in the first layer
        h = M if self.first else torch.einsum("bhf,hfd->bhd", M, self.attention[0].weight)
        h = h.reshape(h.shape[0], -1) if self.concat else h.mean(1)
        return h + self.bias


class GAT(Backbone):
    """GAT: ``C^h_ij = softmax_j LeakyReLU(a_hᵀ [W_h x_i ‖ W_h x_j])`` over ``N(i) ∪ {i}``.

    Hidden layers concatenate ``heads`` heads; the output layer averages ``output_heads``.
    Edge weights of ``A`` are ignored: attention decides the weights.

    Parameters
    ----------
    heads : int, default=8
        Attention heads of the hidden layers; their widths must be divisible by it.
    output_heads : int, default=1
        Attention heads of the output layer, averaged.
    """

    name = "gat"

    def __init__(self, heads: int = 8, output_heads: int = 1):
        self.heads = heads
        self.output_heads = output_heads

    def convolutions(self, A: sp.csr_array) -> list[sp.csr_array | Attention | None]:
        return [Attention(attention_mask(A))]

    def layer(self, in_features: int, out_features: int, *, first: bool, last: bool) -> nn.Module:
        heads = self.output_heads if last else self.heads
        return GATLayer(in_features, out_features, heads, concat=not last, first=first)


class TransformerLayer(nn.Module):
    """A local GCN convolution plus multi-head global attention over all nodes:
    ``Z = (C x) W + Σ_h M^h V_h + b`` with ``M^h = softmax(Q_h Kᵀ_h / √d) x``."""

    def __init__(self, in_features: int, out_features: int, heads: int, first: bool = False):
        super().__init__()
        # the first layer's raw features may be wide: its keys take the output's width
        key_features = max(1, (out_features if first else in_features) // heads)
        self.local = nn.Linear(in_features, out_features)
        self.attention = nn.ModuleList([DotProductAttention(in_features, key_features, heads)])
        self.value = nn.Parameter(torch.empty(heads, in_features, out_features))
        nn.init.xavier_uniform_(self.value)

    def forward(self, messages: list[Tensor | None]) -> Tensor:
        local, global_ = messages
        z = _linear(self.local, local)
        if global_ is not None:
            z = z + torch.einsum("bhf,hfo->bo", global_, self.value)
        return z


class Transformer(Backbone):
    """A graph transformer layer: local GCN messages plus global attention over every node.

    Out-of-batch keys and values are the codewords, weighted by how many out-of-batch nodes each
    stands for; this needs whole-vector codewords (``codeword_dim`` at least the layer width).
    In the first layer they are the input codewords of the raw features, so global attention
    acts in every layer.

    Parameters
    ----------
    heads : int, default=1
        Heads of the global attention.
    """

    name = "transformer"
    n_convolutions = 2

    def __init__(self, heads: int = 1):
        self.heads = heads

    def convolutions(self, A: sp.csr_array) -> list[sp.csr_array | Attention | None]:
        return [gcn_norm(A), Attention(None)]

    def layer(self, in_features: int, out_features: int, *, first: bool, last: bool) -> nn.Module:
        return TransformerLayer(in_features, out_features, self.heads, first=first)


BACKBONES: dict[str, type[Backbone]] = {cls.name: cls for cls in (GCN, SAGE, GIN, GAT, Transformer)}


class AddGradient(torch.autograd.Function):
    """Identity in the forward pass; adds a fixed tensor to the gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, extra: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(extra)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        (extra,) = ctx.saved_tensors
        return grad + extra, None


@dataclass
class Groups:
    """Out-of-batch terms of one learnable convolution at one VQ layer, grouped by codes.

    For the forward pass ``rows`` are batch receivers and ``cols`` sender groups; for the
    backward pass (receivers outside the batch) ``rows`` are batch senders and ``cols`` receiver
    groups. Both are ``None`` for global attention (every row meets every group).
    log_count : per pair (E,), or per group (U,) for global attention
    codes : (U, P) the codes of each group's reconstruction
    """

    rows: Tensor | None
    cols: Tensor | None
    log_count: Tensor
    codes: Tensor


@dataclass
class Batch:
    """Device tensors of one mini-batch.

    inputs : per convolution, the first layer's aggregated input rows ``(C^(s) X)_B`` (b, f0);
        ``None`` for a learnable convolution, which aggregates ``raw`` instead
    intra : per convolution, ``C_in`` as sparse (b, b) for a fixed one, (rows, cols) of the mask
        inside the batch for a masked attention, ``None`` otherwise
    sketches : per VQ layer, per convolution, the codeword sketch (P·b, P·k) as ``SketchBags``, or
        ``None``
    transposed : like ``sketches`` for the transposed sketch; empty when not training
    raw : input features of the batch rows, then of the out-of-batch senders the first layer
        reads exactly (dense, or sparse CSR); ``None`` without attention
    input_pairs : per convolution, (rows, cols into ``raw``) of a masked attention's first layer
    input_senders : per convolution, ``Groups`` of a learnable convolution's other out-of-batch
        senders in the first layer, by their input codes (``VQGNN.input_codebook``); empty, or
        ``None`` entries, when every sender is read exactly
    senders, receivers : per VQ layer, per convolution, ``Groups`` of a learnable convolution
    """

    nodes: Tensor
    inputs: list[Tensor | None]
    intra: list
    sketches: list[list[SketchBags | None]]
    transposed: list[list[SketchBags | None]] = field(default_factory=list)
    raw: Tensor | None = None
    input_pairs: list = field(default_factory=list)
    input_senders: list[Groups | None] = field(default_factory=list)
    senders: list[list[Groups | None]] = field(default_factory=list)
    receivers: list[list[Groups | None]] = field(default_factory=list)


@dataclass
class LayerTrace:
    """What a training step keeps of a VQ layer: its batch input, aggregated messages (one per
    non-identity convolution: (b, f), or (b, H, f) for attention) and attention log normalisers."""

    x: Tensor
    messages: list[Tensor]
    lse: list[Tensor]
    blue: Tensor | None


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


class VQGNN(nn.Module):
    """A stack of backbone layers with one product codebook per layer after the first.

    Parameters
    ----------
    backbone : Backbone
    kinds : list of str
        Per convolution, ``kind_of`` its entry in ``backbone.convolutions``.
    dims : list of int
        Layer widths ``[f0, h1, ..., out]``.
    n_codewords, codeword_dim, decay, grad_scale : codebook settings (see ``ProductCodebook``);
        ``codeword_dim=None`` quantises whole vectors (one slice per layer).
    dropout : float
        Dropout on each layer's input.
    attention_dropout : float
        Dropout on the attention weights of learnable convolutions (``attend``).
    """

    def __init__(
        self,
        backbone: Backbone,
        kinds: list[str],
        dims: list[int],
        n_codewords: int,
        codeword_dim: int | None,
        decay: float,
        grad_scale: float,
        dropout: float,
        sparse_backend: str = "torch",
        attention_dropout: float = 0.0,
    ):
        super().__init__()
        self.kinds = list(kinds)
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.sparse_backend = sparse_backend
        n_layers = len(dims) - 1
        self.layers = nn.ModuleList(
            backbone.layer(dims[i], dims[i + 1], first=i == 0, last=i == n_layers - 1)
            for i in range(n_layers)
        )
        n_attention = sum(k in ("attention", "global") for k in self.kinds)
        for layer in self.layers:
            found = len(getattr(layer, "attention", ()))
            if found != n_attention:
                raise ValueError(
                    f"{backbone!r} lists {n_attention} Attention convolutions but its layer "
                    f"{type(layer).__name__} has {found} attention modules"
                )
        self.codebooks = nn.ModuleList()
        for level, width in enumerate(dims[1:-1]):
            channels = self.channels(level)
            cb = ProductCodebook(
                width,
                n_codewords,
                width if codeword_dim is None else codeword_dim,
                sum(len(c) for c in channels),
                decay,
                grad_scale,
                n_aux=2 * sum(len(c) for c, k in zip(channels, kinds, strict=True) if k != "fixed"),
            )
            if "global" in self.kinds and cb.n_slices > 1:
                raise ValueError(
                    f"global attention needs whole-vector codewords, but codeword_dim="
                    f"{codeword_dim} cuts a width-{width} layer into {cb.n_slices} slices; "
                    "use codeword_dim='auto'"
                )
            self.codebooks.append(cb)
        # learnable convolutions read out-of-batch senders of the first layer from whole-vector
        # codewords of the raw features, fixed after initialisation (the inputs do not change)
        self.input_codebook: ProductCodebook | None = None
        if n_attention:
            self.input_codebook = ProductCodebook(dims[0], n_codewords, dims[0], 0, decay, 0.0)

    def channels(self, level: int) -> list[range]:
        """Per convolution, its gradient channels in VQ layer ``level``'s codebook (one per fixed
        convolution, one per attention head)."""
        layer = self.layers[level + 1]
        out, start, a = [], 0, 0
        for kind in self.kinds:
            size = 0
            if kind == "fixed":
                size = 1
            elif kind != "identity":
                size = layer.attention[a].heads
                a += 1
            out.append(range(start, start + size))
            start += size
        return out

    def _aux(self, level: int) -> list[tuple[range, range] | None]:
        """Per convolution, the auxiliary scalars (⟨g, M⟩ per head, log normaliser per head)."""
        out, start = [], 0
        for kind, ch in zip(self.kinds, self.channels(level), strict=True):
            if kind in ("attention", "global"):
                H = len(ch)
                out.append((range(start, start + H), range(start + H, start + 2 * H)))
                start += 2 * H
            else:
                out.append(None)
        return out

    def _attention(self, i: int, s: int) -> AttentionConvolution:
        return self.layers[i].attention[sum(k in ("attention", "global") for k in self.kinds[:s])]

    def _out_of_batch(self, sketch: SketchBags, words: Tensor, cb: ProductCodebook) -> Tensor:
        """Sketch (P·b, P·k) times stacked codewords (P, k, D) -> (b, f)."""
        P, k, D = words.shape
        out = sketch_product(sketch, words.reshape(P * k, D))
        return cb.merge(out.reshape(P, -1, D).transpose(0, 1))

    def blue_messages(self, batch: Batch, level: int, x: Tensor) -> Tensor | None:
        """Eq. 7's out-of-batch gradient for the input ``x`` (b, f) of VQ layer ``level``.

        Each gradient channel is scaled by its codebook's ``grad_trust``: the measured
        agreement of the gradient codewords with the gradients of the nodes they stand for.
        """
        cb = self.codebooks[level]
        trust = cb.grad_trust  # (S,)
        total = None
        channels, aux = self.channels(level), self._aux(level)
        for s, kind in enumerate(self.kinds):
            term = None
            ch = channels[s]
            if kind == "fixed" and batch.transposed[level][s] is not None:
                grads = cb.grad_codewords[ch.start] * trust[ch.start]  # (P, k, D)
                term = self._out_of_batch(batch.transposed[level][s], grads, cb)
            elif kind in ("attention", "global") and batch.receivers[level][s] is not None:
                rec = batch.receivers[level][s]
                if len(rec.codes) == 0:
                    continue
                x_rec, g_rec, a_rec = cb.lookup_gradients(rec.codes)
                inner, lse = aux[s]
                t = trust[ch.start : ch.stop]  # (H,)
                receivers = (
                    x_rec,
                    (g_rec[ch.start : ch.stop] * t[:, None, None]).transpose(0, 1),
                    a_rec[inner.start : inner.stop].T * t,
                    a_rec[lse.start : lse.stop].T,
                )
                edges = None if kind == "global" else (rec.rows, rec.cols)
                term = attention_blue(
                    self._attention(level + 1, s), x, receivers, rec.log_count, edges
                )
            if term is not None:
                total = term if total is None else total + term
        return total

    def aggregate(
        self, batch: Batch, level: int, x: Tensor
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """Eq. 6: messages into the batch for VQ layer ``level`` (input ``x``: (b, f)), and per
        convolution the attention log normalisers (``None`` for fixed ones)."""
        cb = self.codebooks[level]
        words = cb.codewords
        messages: list[Tensor] = []
        lses: list[Tensor | None] = []
        for s, kind in enumerate(self.kinds):
            lse = None
            if kind == "identity":
                m = x
            elif kind == "fixed":
                m = spmm(batch.intra[s], x, self.sparse_backend)
                sketch = batch.sketches[level][s] if batch.sketches else None
                if sketch is not None and sketch.nnz > 0:
                    m = m + self._out_of_batch(sketch, words, cb)
            else:
                groups = batch.senders[level][s] if batch.senders else None
                m, lse = self._attend(self._attention(level + 1, s), batch, s, x, groups, cb, words)
            messages.append(m)
            lses.append(lse)
        return messages, lses

    def _attend(
        self,
        conv: AttentionConvolution,
        batch: Batch,
        s: int,
        x: Tensor,
        groups: Groups | None,
        cb: ProductCodebook,
        words: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """One learnable convolution: exact intra-batch senders plus codeword groups."""
        b = x.shape[0]
        x_src = x
        if groups is not None and len(groups.codes):
            slices = torch.arange(cb.n_slices, device=x.device)
            x_src = torch.cat([x, cb.merge(words[slices, groups.codes])])
        edges, log_count = _sender_terms(batch.intra[s], groups, b, x_src is not x)
        return attend(conv, x, x_src, edges, log_count, dropout=self._attention_p())

    def _attention_p(self) -> float:
        return self.attention_dropout if self.training else 0.0

    def input_messages(self, batch: Batch) -> list[Tensor | None]:
        """The first layer's messages: precomputed for fixed convolutions; for learnable ones,
        attention over the raw features of the batch rows and the input codewords of the
        out-of-batch senders."""
        raw = None
        messages: list[Tensor | None] = []
        for s, kind in enumerate(self.kinds):
            if kind in ("identity", "fixed"):
                messages.append(sparse_dropout(batch.inputs[s], self.dropout, self.training))
                continue
            if raw is None:
                raw = sparse_dropout(batch.raw, self.dropout, self.training)
            groups = batch.input_senders[s] if batch.input_senders else None
            b = batch.nodes.shape[0]
            messages.append(self.first_attention(s, raw, batch.input_pairs[s], groups, b))
        return messages

    def first_attention(
        self,
        s: int,
        x: Tensor,
        intra: tuple[Tensor, Tensor] | None,
        groups: Groups | None = None,
        n_receivers: int | None = None,
    ) -> Tensor:
        """The first layer's attention ``s`` into the batch rows, whose raw features are ``x``
        (dense, or sparse COO): intra-batch senders exact (the pairs ``intra``, or every pair
        for global attention), out-of-batch ones from their ``groups`` of input codewords.
        Over projected values when the convolution has them. ``n_receivers`` = r makes only
        the first r rows receivers (all rows send)."""
        conv = self._attention(0, s)
        b = x.shape[0] if n_receivers is None else n_receivers
        words = None
        if groups is not None and len(groups.codes):
            words = self.input_codebook.lookup(groups.codes)  # (U, f0)
        edges, log_count = _sender_terms(intra, groups, x.shape[0], words is not None)
        p = self._attention_p()
        if hasattr(conv, "value"):
            parts = [x] if words is None else [x, words]
            keys = torch.cat([conv.key(v) for v in parts])
            values = torch.cat([conv.value(v) for v in parts])
            queries = conv.query(x)[:b]
            return attend(conv, b, None, edges, log_count, values, p, queries, keys)[0]
        rows = dense(x)
        x_src = rows if words is None else torch.cat([rows, words])
        return attend(conv, rows[:b], x_src, edges, log_count, dropout=p)[0]

    def forward(
        self, batch: Batch, blue: bool = False, upto: int | None = None
    ) -> tuple[Tensor, list[LayerTrace]]:
        """Logits of the batch rows, and per VQ layer the trace a training step needs.

        In training mode the aggregated messages retain their gradients (``∂ℓ/∂M``), and with
        ``blue=True`` the out-of-batch gradient messages are added to each VQ layer's input.
        ``upto=l`` stops after layer ``l`` and returns its output, the input of VQ layer ``l``
        (the batch needs the codebook levels below ``l`` only).
        """
        traces: list[LayerTrace] = []
        h = None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers[: None if upto is None else upto + 1]):
            if i == 0:
                messages = self.input_messages(batch)
            else:
                x = h
                extra = None
                if blue and batch.transposed:
                    extra = self.blue_messages(batch, i - 1, h.detach())
                if extra is not None:
                    x = AddGradient.apply(x, extra)
                messages, lses = self.aggregate(
                    batch, i - 1, F.dropout(x, self.dropout, self.training)
                )
                if self.training:
                    kept = [
                        m
                        for m, kind in zip(messages, self.kinds, strict=True)
                        if kind != "identity"
                    ]
                    for m in kept:
                        m.retain_grad()
                    lse = [v.detach() for v in lses if v is not None]
                    traces.append(LayerTrace(x=h, messages=kept, lse=lse, blue=extra))
            z = layer(messages)
            h = F.relu(z) if i < last else z
        return h, traces
