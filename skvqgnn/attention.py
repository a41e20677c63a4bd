"""Learnable convolutions: softmax attention ``C^h_ij = softmax_j score(query_h(x_i), key_h(x_j))``.

An ``AttentionConvolution`` module scores (receiver, sender) pairs; ``attend`` aggregates senders
with the softmax weights of those scores, over the pairs of a mask or over every pair, with
senders that stand for several nodes (a codeword) weighted by their number; ``attention_blue``
is the backward message of Eq. 7 through such a convolution. The convolution kinds of
``skvqgnn.convolutions`` use them in the forward pass, the backward messages and the exact pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .sketch import dropout as _dropout
from .sketch import stable_order

__all__ = [
    "AttentionConvolution",
    "DotProductAttention",
    "GATAttention",
    "attend",
    "attend_chunked",
    "attention_blue",
    "segment_sum",
]


def _matmul(x: Tensor, w: Tensor) -> Tensor:
    return x @ w


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
    """GAT scores ``LeakyReLU(a_dstᵀ W_h x_i + a_srcᵀ W_h x_j)`` (Veličković et al.).

    Parameters
    ----------
    in_features : int
        Width of the layer input.
    head_features : int
        Width ``d`` of each head's projection ``W_h``.
    heads : int
        Number of heads ``H``.
    negative_slope : float, default=0.2
        Of the LeakyReLU.
    """

    def __init__(self, in_features: int, head_features: int, heads: int, negative_slope=0.2):
        super().__init__()
        self.heads = heads
        self.negative_slope = negative_slope
        self.weight = nn.Parameter(torch.empty(heads, in_features, head_features))
        self.att_src = nn.Parameter(torch.empty(heads, head_features))
        self.att_dst = nn.Parameter(torch.empty(heads, head_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform initialisation of ``W`` and of the attention vectors."""
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
        """Per-head projections ``W_h x`` of the senders.

        Parameters
        ----------
        x : Tensor of shape (m, f)
            Dense, or sparse (the raw features of the first layer).

        Returns
        -------
        Tensor of shape (m, H, d)
        """
        H, f, d = self.weight.shape
        return _matmul(x, self.weight.permute(1, 0, 2).reshape(f, H * d)).reshape(-1, H, d)


class DotProductAttention(AttentionConvolution):
    """Scaled dot-product scores ``(W_Q,h x_i)·(W_K,h x_j) / √d`` (Vaswani et al.).

    Parameters
    ----------
    in_features : int
        Width of the layer input.
    key_features : int
        Width ``d`` of each head's queries and keys.
    heads : int
        Number of heads ``H``.
    """

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
            alpha = _dropout(alpha, dropout, True)
        if values is not None:
            return torch.einsum("bmh,mhd->bhd", alpha, values), lse
        return torch.einsum("bmh,mf->bhf", alpha, x_src), lse
    rows, cols = edges
    # index_select, not q[rows]: its backward (index_add_) is deterministic on a multithreaded
    # CPU, where the backward of advanced indexing sums repeated rows in any order
    s = conv.score(q.index_select(0, rows), k.index_select(0, cols))  # (E, H)
    if log_count is not None:
        s = s + log_count.unsqueeze(-1)
    index = rows.unsqueeze(-1).expand(-1, H)
    peak = torch.full((b, H), -torch.inf, dtype=s.dtype, device=s.device)
    peak = peak.scatter_reduce(0, index, s.detach(), "amax")
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    w = torch.exp(s - peak[rows])  # (E, H), at most 1
    den = torch.zeros(b, H, dtype=s.dtype, device=s.device).index_add(0, rows, w)
    den = den.clamp_min(torch.finfo(s.dtype).tiny)
    alpha = w / den.index_select(0, rows)
    if dropout > 0:
        alpha = _dropout(alpha, dropout, True)
    return segment_sum(rows, cols, alpha, x_src if values is None else values, b), peak + torch.log(
        den
    )


def segment_sum(rows: Tensor, cols: Tensor, weights: Tensor, src: Tensor, b: int) -> Tensor:
    """``out[i, h] = Σ_{e: rows[e] = i} weights[e, h] · src[cols[e]]`` (b, H, f).

    ``src`` is (m, f), shared by the heads, or (m, H, f). One weighted bag sum per head
    (``embedding_bag``), so memory is O(E·H + m·f): the (E, H, f) tensor of the terms is never
    built, and the gradient reaches ``weights`` and ``src``. The gradient of ``src`` is the
    transposed sum, bags of the entries grouped by column, every head in one call
    (`_SourceGradient`): ``embedding_bag``'s own gradient of its table sorts the entries again
    for every head, which made the backward pass of a GAT step five times its forward.
    """
    if len(rows) > 1 and bool((rows[1:] < rows[:-1]).any()):
        order = _stable_order(rows, b)
        rows, cols, weights = rows[order], cols[order], weights[order]
    counts = torch.bincount(rows, minlength=b)
    offsets = torch.cumsum(counts, 0) - counts
    table = src.detach()
    heads = []
    for h in range(weights.shape[1]):
        heads.append(
            F.embedding_bag(
                cols,
                table if table.dim() == 2 else table[:, h].contiguous(),
                offsets,
                mode="sum",
                per_sample_weights=weights[:, h].contiguous(),
            )
        )
    out = torch.stack(heads, 1)
    if src.requires_grad:
        out = _SourceGradient.apply(out, src, rows, cols, weights.detach())
    return out


def _stable_order(keys: Tensor, bound: int) -> Tensor:
    """`stable_order` of integer ``keys`` in ``[0, bound)`` on their device (through NumPy on
    the CPU, whose radix sort of small keys is an order of magnitude faster than torch's)."""
    if keys.device.type == "cpu":
        return torch.from_numpy(stable_order(keys.numpy(), bound))
    return torch.argsort(keys, stable=True)


class _SourceGradient(torch.autograd.Function):
    """The identity on ``segment_sum``'s messages (b, H, f) whose backward pass also gives the
    gradient of their source rows ``src``: ``∂src[j] = Σ_{e: cols[e] = j} weights[e, h] ·
    ∂out[rows[e], h]``, summed over the heads when they share ``src``."""

    @staticmethod
    def forward(ctx, out, src, rows, cols, weights):  # noqa: D102
        ctx.save_for_backward(rows, cols, weights)
        ctx.src_shape = src.shape
        return out.clone()

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        rows, cols, weights = ctx.saved_tensors
        m, H = ctx.src_shape[0], weights.shape[1]
        b, f = grad_out.shape[0], grad_out.shape[-1]
        order = _stable_order(cols, m)
        counts = torch.bincount(cols, minlength=m)
        offsets = torch.cumsum(counts, 0) - counts
        senders, w = rows[order], weights[order]  # (E,), (E, H)
        flat = grad_out.reshape(b * H, f)
        heads = torch.arange(H, device=rows.device)
        if len(ctx.src_shape) == 2:  # shared by the heads: one bag per column, over (e, h)
            index = (senders.unsqueeze(1) * H + heads).reshape(-1)
            grad_src = F.embedding_bag(
                index, flat, offsets * H, mode="sum", per_sample_weights=w.reshape(-1)
            )
        else:  # (m, H, f): one bag per (column, head)
            index = (senders * H + heads.unsqueeze(1)).reshape(-1)  # (H, E): head-major
            starts = (offsets.unsqueeze(0) + heads.unsqueeze(1) * len(senders)).reshape(-1)
            grad_src = (
                F.embedding_bag(index, flat, starts, mode="sum", per_sample_weights=w.T.reshape(-1))
                .view(H, m, f)
                .transpose(0, 1)
            )
        return grad_out, grad_src, None, None, None


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
            s = conv.score(q[groups], k.index_select(0, senders)) - lse_rec[groups]  # (E, H)
            alpha = torch.exp(s.clamp_max(0.0) + log_count.unsqueeze(-1))
            x_s = x.index_select(0, senders)
            inner = torch.einsum("ehf,ef->eh", g_rec[groups], x_s) - inner_rec[groups]
        (grad,) = torch.autograd.grad((alpha * inner).sum(), x)
    return grad
