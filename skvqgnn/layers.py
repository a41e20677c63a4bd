"""Backbones and the VQ-approximated message passing of one mini-batch (DESIGN §1, §4).

A backbone is one small class: the convolution matrices it aggregates with (computed once on the
host from the full graph) and the layer that combines the aggregated messages,

    Z = Σ_s M^(s) W^(s) + b,     M^(s) = C^(s) X.

For a batch ``B`` and layer ``l ≥ 1`` the aggregation is approximated as in Eq. 6,

    M_B^(s) ≈ C_in^(s) X_B + C̃_out^(s) X̃,

where ``X̃`` are the layer's feature codewords, and the backward pass adds the out-of-batch
("blue") messages of Eq. 7 to the gradient of ``X_B``:

    ∇X_B += (C^(s)ᵀ)_out R G̃^(s),     G̃^(s): codewords of ∂ℓ/∂M^(s).

The quantity clustered for the gradient codewords is the gradient of each aggregation output
``M^(s)`` (before ``W``), so the blue term needs no ``W^(s)ᵀ`` factor, and it reaches ``X_B``
only: the weights' gradients come from the batch's own rows, never from codewords. The first
layer aggregates the fixed input features, so its aggregation ``C^(s) X`` is computed once on the
host and is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import scipy.sparse as sp
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .graph import gcn_norm, mean_norm
from .sketch import spmm
from .vq import ProductCodebook

__all__ = ["Backbone", "GCN", "SAGE", "BACKBONES", "LinearCombination", "VQGNN", "Batch"]


class LinearCombination(nn.Module):
    """``Z = Σ_s M^(s) W^(s) + b``: one linear map per convolution, one shared bias."""

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


def _linear(linear: nn.Linear, x: Tensor) -> Tensor:
    """``linear(x)`` for a dense or sparse (COO) ``x``."""
    if not x.is_sparse:
        return linear(x)
    out = torch.sparse.mm(x, linear.weight.T)
    return out if linear.bias is None else out + linear.bias


def sparse_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Dropout on the stored values of a sparse (COO) tensor, or plain dropout on a dense one."""
    if not x.is_sparse:
        return F.dropout(x, p, training)
    if not training or p == 0:
        return x
    return torch.sparse_coo_tensor(
        x.indices(),
        F.dropout(x.values(), p, True),
        x.shape,
        is_coalesced=True,
        check_invariants=False,
    )


class Backbone:
    """A GNN family: its convolution matrices and its layer update.

    Subclasses set ``name`` and implement ``convolutions``; ``None`` in the returned list stands for
    the identity (a root weight), which has no out-of-batch messages.
    """

    name: str = ""

    def convolutions(self, A: sp.csr_array) -> list[sp.csr_array | None]:
        raise NotImplementedError

    def layer(self, in_features: int, out_features: int, n_convolutions: int) -> nn.Module:
        return LinearCombination(in_features, out_features, n_convolutions)


class GCN(Backbone):
    """Kipf & Welling: ``C = D̃^-½ (A + I) D̃^-½`` (symmetric for undirected graphs)."""

    name = "gcn"

    def convolutions(self, A: sp.csr_array) -> list[sp.csr_array | None]:
        return [gcn_norm(A)]


class SAGE(Backbone):
    """GraphSAGE-mean: ``C¹ = I`` (root weight) and ``C² = D⁻¹ A`` (not symmetric)."""

    name = "sage"

    def convolutions(self, A: sp.csr_array) -> list[sp.csr_array | None]:
        return [None, mean_norm(A)]


BACKBONES: dict[str, type[Backbone]] = {cls.name: cls for cls in (GCN, SAGE)}


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
class Batch:
    """Device tensors of one mini-batch.

    inputs : per convolution, the first layer's aggregated input rows ``(C^(s) X)_B`` (b, f0)
    intra : per convolution, ``C_in`` as sparse (b, b), ``None`` for the identity
    sketches : per VQ layer, per convolution, the codeword sketch (b·P, P·k) or ``None``
    transposed : like ``sketches`` for the transposed sketch; empty when not training
    """

    nodes: Tensor
    inputs: list[Tensor]
    intra: list[Tensor | None]
    sketches: list[list[Tensor | None]]
    transposed: list[list[Tensor | None]] = field(default_factory=list)


@dataclass
class LayerTrace:
    """What a training step keeps of a VQ layer: its batch input and aggregated messages."""

    x: Tensor
    messages: list[Tensor]
    blue: Tensor | None


class VQGNN(nn.Module):
    """A stack of backbone layers with one product codebook per layer after the first.

    Parameters
    ----------
    backbone : Backbone
    identity : list of bool
        Per convolution, whether it is the identity.
    dims : list of int
        Layer widths ``[f0, h1, ..., out]``.
    n_codewords, codeword_dim, decay, grad_scale : codebook settings (see ``ProductCodebook``).
    dropout : float
    """

    def __init__(
        self,
        backbone: Backbone,
        identity: list[bool],
        dims: list[int],
        n_codewords: int,
        codeword_dim: int,
        decay: float,
        grad_scale: float,
        dropout: float,
        sparse_backend: str = "torch",
    ):
        super().__init__()
        self.identity = list(identity)
        self.dropout = dropout
        self.sparse_backend = sparse_backend
        n_conv = len(identity)
        n_out_of_batch = sum(not i for i in identity)
        self.layers = nn.ModuleList(
            backbone.layer(dims[i], dims[i + 1], n_conv) for i in range(len(dims) - 1)
        )
        self.codebooks = nn.ModuleList(
            ProductCodebook(d, n_codewords, codeword_dim, n_out_of_batch, decay, grad_scale)
            for d in dims[1:-1]
        )

    def _out_of_batch(self, sketch: Tensor | None, words: Tensor, cb: ProductCodebook) -> Tensor:
        """Sketch (b·P, P·k) times stacked codewords (P, k, D) -> (b, f)."""
        P, k, D = words.shape
        out = spmm(sketch, words.reshape(P * k, D), self.sparse_backend)
        return cb.merge(out.reshape(-1, P, D))

    def blue_messages(self, batch: Batch, level: int) -> Tensor | None:
        """Eq. 7's out-of-batch gradient for the input of VQ layer ``level``: (b, f)."""
        cb = self.codebooks[level]
        grads = cb.grad_codewords  # (S, P, k, D)
        total = None
        for s, T in enumerate(t for t in batch.transposed[level] if t is not None):
            term = self._out_of_batch(T, grads[s], cb)
            total = term if total is None else total + term
        return total

    def aggregate(self, batch: Batch, level: int, x: Tensor) -> list[Tensor]:
        """Eq. 6: messages into the batch for VQ layer ``level`` (input ``x``: (b, f))."""
        cb = self.codebooks[level]
        words = cb.codewords
        messages = []
        for s, is_identity in enumerate(self.identity):
            if is_identity:
                messages.append(x)
                continue
            m = spmm(batch.intra[s], x, self.sparse_backend)
            sketch = batch.sketches[level][s] if batch.sketches else None
            if sketch is not None and sketch._nnz() > 0:
                m = m + self._out_of_batch(sketch, words, cb)
            messages.append(m)
        return messages

    def forward(self, batch: Batch, blue: bool = False) -> tuple[Tensor, list[LayerTrace]]:
        """Logits of the batch rows, and per VQ layer the trace a training step needs.

        In training mode the aggregated messages retain their gradients (``∂ℓ/∂M``), and with
        ``blue=True`` the out-of-batch gradient messages are added to each VQ layer's input.
        """
        traces: list[LayerTrace] = []
        h = None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i == 0:
                messages = [sparse_dropout(m, self.dropout, self.training) for m in batch.inputs]
            else:
                x = h
                extra = self.blue_messages(batch, i - 1) if blue and batch.transposed else None
                if extra is not None:
                    x = AddGradient.apply(x, extra)
                messages = self.aggregate(batch, i - 1, F.dropout(x, self.dropout, self.training))
                if self.training:
                    kept = [
                        m for m, ident in zip(messages, self.identity, strict=True) if not ident
                    ]
                    for m in kept:
                        m.retain_grad()
                    traces.append(LayerTrace(x=h, messages=kept, blue=extra))
            z = layer(messages)
            h = F.relu(z) if i < last else z
        return h, traces
