"""Backbones and the network that stacks their layers with codebooks (VQ-GNN).

A backbone is one small class: the convolutions it aggregates with (``convolutions(A)``, a list
of ``skvqgnn.convolutions`` kinds computed once from the full graph) and the module that maps a
layer's messages to its output (``layer``). ``VQGNN`` stacks the layers, keeps a product
codebook per layer input after the first, and runs a batch through them: each convolution's
kind computes its messages (Eq. 6) and its backward messages (Eq. 7); this module only combines
them, so that training, VQ inference and exact inference share the same layer code
(``VQGNN.layer_output``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .attention import AttentionConvolution, DotProductAttention, GATAttention
from .convolutions import Attention, Batch, Convolution, Fixed, Identity, Initial
from .graph import attention_mask, canonical_csr, gcn_norm_scales, inverse_degree
from .sketch import dropout, is_sparse, sparse_dropout
from .vq import ProductCodebook

__all__ = [
    "Attention",
    "AttentionConvolution",
    "Backbone",
    "BACKBONES",
    "GAT",
    "GCN",
    "GCNII",
    "GIN",
    "LinearCombination",
    "SAGE",
    "Transformer",
    "VQGNN",
    "make_backbone",
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


def _linear(linear: nn.Linear, x: Tensor) -> Tensor:
    """``linear(x)`` for a dense or sparse (COO or CSR) ``x``."""
    if not is_sparse(x):
        return linear(x)
    out = x @ linear.weight.T
    return out if linear.bias is None else out + linear.bias


class Backbone:
    """A GNN family: its convolutions and its layer update.

    ``convolutions(A)`` lists, from the full graph, what each layer aggregates with, one
    ``skvqgnn.convolutions`` kind per convolution: ``Identity()`` (a root weight, no
    out-of-batch messages), ``Fixed(C)`` for a fixed matrix ``C^(s)``, ``Attention(mask)`` or
    ``Attention()`` for a learnable one (over a mask, or over every pair); ``None`` and a CSR
    matrix are taken for ``Identity()`` and ``Fixed(C)``. ``layer(in, out, last=...)`` builds
    the module that maps the list of messages (one (b, f) tensor per identity or fixed
    convolution, one (b, H, f) tensor per attention) to the layer output; a layer of a backbone
    with attention carries ``attention``, an ``nn.ModuleList`` with one
    ``AttentionConvolution`` per learnable convolution, in order.

    The default layer is ``LinearCombination`` over ``n_convolutions`` messages.
    """

    name: str = ""
    n_convolutions: int = 1

    def convolutions(self, A: sp.csr_array) -> list[Convolution]:
        """What each layer aggregates with, computed once from the full graph.

        Parameters
        ----------
        A : csr_array of shape (n_nodes, n_nodes)
            The validated adjacency (float32, sorted indices); row ``i`` lists the nodes ``i``
            receives messages from.

        Returns
        -------
        list of Convolution
            One kind per convolution (``Identity()``, ``Fixed(C)``, ``Attention(mask)``,
            ``Attention()``).
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

        Notes
        -----
        An override that also takes a keyword ``index`` receives the layer's position (0 for
        the first), for layers that depend on their depth (`GCNII`).
        """
        return LinearCombination(in_features, out_features, self.n_convolutions)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({params})"


def _gcn_convolution(A: sp.csr_array) -> Fixed:
    """GCN's ``C = D̃^-½ (A + I) D̃^-½`` on ``A`` itself: ``Fixed(A, s, s, diagonal)``
    (`gcn_norm_scales`)."""
    A = canonical_csr(A)
    s, diagonal = gcn_norm_scales(A)
    return Fixed(A, row_scale=s, col_scale=s, diagonal=diagonal)


class GCN(Backbone):
    """Kipf & Welling: ``C = D̃^-½ (A + I) D̃^-½`` (symmetric for undirected graphs)."""

    name = "gcn"

    def convolutions(self, A: sp.csr_array) -> list[Convolution]:
        return [_gcn_convolution(A)]


class SAGE(Backbone):
    """GraphSAGE-mean: ``C¹ = I`` (root weight) and ``C² = D⁻¹ A``, ``A`` with a row scale
    (not symmetric; on an undirected graph its transpose is ``A D⁻¹``, the same gather of
    ``A``'s rows scaled by the senders' degrees instead of the receivers')."""

    name = "sage"
    n_convolutions = 2

    def convolutions(self, A: sp.csr_array) -> list[Convolution]:
        A = canonical_csr(A)
        return [Identity(), Fixed(A, row_scale=inverse_degree(A))]


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
        h = (1 + self.eps) * (root @ no_bias) + neighbours @ no_bias + self.lin1.bias
        return self.lin2(F.relu(h))


class GIN(Backbone):
    """GIN: ``C = (1 + ε) I + A`` (sum aggregation) with an MLP update."""

    name = "gin"

    def convolutions(self, A: sp.csr_array) -> list[Convolution]:
        A = canonical_csr(A)
        return [Identity(), Fixed(A if A.dtype == np.float32 else A.astype(np.float32))]

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

    def convolutions(self, A: sp.csr_array) -> list[Convolution]:
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


class GCNIIInput(nn.Module):
    """GCNII's first layer, ``H⁰ = X W + b`` (ReLU follows): a linear map of the raw features,
    the message of the ``Initial`` convolution; the propagated features are not used."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, messages: list[Tensor]) -> Tensor:
        return _linear(self.linear, messages[1])


class GCNIILayer(nn.Module):
    """``Z = ((1 − α) C x + α H⁰)((1 − β) I + β W)``, the initial residual and the identity
    mapping of GCNII; in the output layer followed by ReLU and a linear map to the outputs."""

    def __init__(self, width: int, out_features: int, alpha: float, beta: float, last: bool):
        super().__init__()
        self.alpha, self.beta = alpha, beta
        self.weight = nn.Linear(width, width, bias=False)
        self.output = nn.Linear(width, out_features) if last else None

    def forward(self, messages: list[Tensor]) -> Tensor:
        propagated, initial = messages
        support = (1 - self.alpha) * propagated + self.alpha * initial
        z = (1 - self.beta) * support + self.beta * self.weight(support)
        return z if self.output is None else self.output(F.relu(z))


class GCNII(Backbone):
    """GCNII (Chen et al., 2020): GCN propagation with an initial residual and identity mapping,
    which keeps deep stacks trainable.

    ``H⁰ = ReLU(X W_in)``, then per hidden layer ``l``
    ``H^(l+1) = ReLU(((1 − α) C H^l + α H⁰)((1 − β_l) I + β_l W_l))`` with ``C`` GCN's
    normalised adjacency and ``β_l = log(λ / l + 1)``, and a linear output layer after the last
    propagation. ``hidden_layer_sizes`` gives one propagation per entry; their widths must be
    equal. Its convolutions are a ``Fixed`` one and ``Initial``, each node's own ``H⁰``: a new
    kind of convolution, exact within the node, which needs no codeword.

    Parameters
    ----------
    alpha : float, default=0.1
        Weight of the initial residual ``H⁰``.
    lamda : float, default=0.5
        Sets ``β_l = log(lamda / l + 1)``, the weight of ``W_l`` against the identity, smaller
        in deeper layers.
    """

    name = "gcnii"
    n_convolutions = 2

    def __init__(self, alpha: float = 0.1, lamda: float = 0.5):
        self.alpha = alpha
        self.lamda = lamda

    def convolutions(self, A: sp.csr_array) -> list[Convolution]:
        return [_gcn_convolution(A), Initial()]

    def layer(
        self, in_features: int, out_features: int, *, first: bool, last: bool, index: int = 0
    ) -> nn.Module:
        if first:
            return GCNIIInput(in_features, out_features)
        if not last and in_features != out_features:
            raise ValueError(
                f"GCNII keeps the width of its hidden layers, but a layer maps {in_features} to "
                f"{out_features} features: give hidden_layer_sizes equal widths"
            )
        beta = math.log(self.lamda / index + 1)
        return GCNIILayer(in_features, out_features, self.alpha, beta, last)


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

    def convolutions(self, A: sp.csr_array) -> list[Convolution]:
        return [_gcn_convolution(A), Attention()]

    def layer(self, in_features: int, out_features: int, *, first: bool, last: bool) -> nn.Module:
        return TransformerLayer(in_features, out_features, self.heads, first=first)


BACKBONES: dict[str, type[Backbone]] = {
    cls.name: cls for cls in (GCN, SAGE, GIN, GAT, Transformer, GCNII)
}


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


def make_backbone(name: str | Backbone, heads: int | None = None) -> Backbone:
    """A backbone by name (``BACKBONES``), with ``heads`` when its constructor takes them; a
    ``Backbone`` instance is returned as it is."""
    if isinstance(name, Backbone):
        return name
    cls = BACKBONES[name]
    if heads is not None and "heads" in inspect.signature(cls).parameters:
        return cls(heads=heads)
    return cls()


@dataclass
class LayerTrace:
    """What a training step keeps of a VQ layer: its batch input ``x``, and per convolution
    with gradient channels its kind, its aggregated messages (the gradient ``∂ℓ/∂M`` lands in
    their ``.grad``) and its attention log normalisers (``None`` for a fixed one); ``blue``,
    the backward messages added to the input's gradient."""

    x: Tensor
    kinds: list[type[Convolution]]
    messages: list[Tensor]
    lse: list[Tensor | None]
    blue: Tensor | None


@dataclass(frozen=True)
class Channels:
    """A convolution's slots in a VQ layer's gradient codebook: its gradient channels and
    auxiliary scalars (empty ranges when it has none)."""

    gradients: range
    aux: range


class VQGNN(nn.Module):
    """A stack of backbone layers with one product codebook per layer input after the first.

    Parameters
    ----------
    backbone : Backbone
    kinds : list of type
        Per convolution, its kind (a ``skvqgnn.convolutions.Convolution`` subclass), in the
        order of ``backbone.convolutions``.
    dims : list of int
        Layer widths ``[f0, h1, ..., out]``.
    n_codewords, codeword_dim, decay, grad_scale : codebook settings (see ``ProductCodebook``);
        ``codeword_dim=None`` quantises whole vectors (one slice per layer).
    dropout : float
        Dropout on each layer's input.
    sparse_backend : {"torch", "torch_sparse"}, default="torch"
        Kernel of the sparse products.
    attention_dropout : float, default=0.0
        Dropout on the attention weights of learnable convolutions (``attend``).
    """

    def __init__(
        self,
        backbone: Backbone,
        kinds: Sequence[type[Convolution]],
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
            backbone.layer(
                dims[i],
                dims[i + 1],
                first=i == 0,
                last=i == n_layers - 1,
                **({"index": i} if "index" in inspect.signature(backbone.layer).parameters else {}),
            )
            for i in range(n_layers)
        )
        # the position of each learnable convolution's module in a layer's ``attention`` list
        self._attention_slot: list[int | None] = []
        for kind in self.kinds:
            self._attention_slot.append(
                sum(s is not None for s in self._attention_slot) if kind.learnable else None
            )
        n_attention = sum(kind.learnable for kind in self.kinds)
        for layer in self.layers:
            found = len(getattr(layer, "attention", ()))
            if found != n_attention:
                raise ValueError(
                    f"{backbone!r} lists {n_attention} attention convolutions but its layer "
                    f"{type(layer).__name__} has {found} attention modules"
                )
        self.codebooks = nn.ModuleList()
        for level, width in enumerate(dims[1:-1]):
            slots = self.channels(level)
            cb = ProductCodebook(
                width,
                n_codewords,
                width if codeword_dim is None else codeword_dim,
                sum(len(c.gradients) for c in slots),
                decay,
                grad_scale,
                n_aux=sum(len(c.aux) for c in slots),
            )
            whole = [kind.__name__ for kind in self.kinds if kind.whole_vectors]
            if whole and cb.n_slices > 1:
                raise ValueError(
                    f"{whole[0]} needs whole-vector codewords, but codeword_dim={codeword_dim} "
                    f"cuts a width-{width} layer into {cb.n_slices} slices; use "
                    "codeword_dim='auto'"
                )
            self.codebooks.append(cb)
        # learnable convolutions read out-of-batch senders of the first layer from whole-vector
        # codewords of the raw features, fixed after initialisation (the inputs do not change)
        self.input_codebook: ProductCodebook | None = None
        if n_attention:
            self.input_codebook = ProductCodebook(dims[0], n_codewords, dims[0], 0, decay, 0.0)

    @property
    def attention_p(self) -> float:
        """The attention dropout rate in the current mode (0 in eval mode)."""
        return self.attention_dropout if self.training else 0.0

    def attention(self, layer: int, s: int) -> AttentionConvolution | None:
        """The ``AttentionConvolution`` of convolution ``s`` in layer ``layer`` (``None`` for
        a convolution that is not learnable)."""
        slot = self._attention_slot[s]
        return None if slot is None else self.layers[layer].attention[slot]

    def channels(self, level: int) -> list[Channels]:
        """Per convolution, its slots in VQ layer ``level``'s gradient codebook."""
        out, start, aux = [], 0, 0
        for s, kind in enumerate(self.kinds):
            module = self.attention(level + 1, s)
            n, a = kind.n_channels(module), kind.n_aux(module)
            out.append(Channels(range(start, start + n), range(aux, aux + a)))
            start, aux = start + n, aux + a
        return out

    def input_messages(self, batch: Batch) -> list[Tensor]:
        """The first layer's messages, one per convolution."""
        b = batch.nodes.shape[0]
        dropped: list[Tensor] = []

        def raw() -> Tensor:  # the raw features' dropout, drawn once for all convolutions
            if not dropped:
                dropped.append(sparse_dropout(batch.raw, self.dropout, self.training))
            return dropped[0]

        return [
            kind.input_messages(part, raw, b, self.attention(0, s), self)
            for s, (kind, part) in enumerate(zip(self.kinds, batch.parts, strict=True))
        ]

    def aggregate(
        self, batch: Batch, level: int, x: Tensor, initial: Tensor
    ) -> tuple[list[Tensor], list[Tensor | None]]:
        """Eq. 6 for every convolution: the messages into the batch of VQ layer ``level``
        (input ``x``: (b, f); ``initial``: the batch's first-layer output), and their
        attention log normalisers (``None`` if fixed)."""
        cb = self.codebooks[level]
        messages, lses = [], []
        for s, (kind, part) in enumerate(zip(self.kinds, batch.parts, strict=True)):
            module = self.attention(level + 1, s)
            m, lse = kind.messages(part, level, x, initial, cb, module, self)
            messages.append(m)
            lses.append(lse)
        return messages, lses

    def blue_messages(self, batch: Batch, level: int, x: Tensor) -> Tensor | None:
        """Eq. 7 for every convolution: the out-of-batch gradient for the input ``x`` (b, f)
        of VQ layer ``level``, each gradient channel scaled by its codebook's trust ratio."""
        cb = self.codebooks[level]
        total = None
        slots = self.channels(level)
        for s, (kind, part) in enumerate(zip(self.kinds, batch.parts, strict=True)):
            module = self.attention(level + 1, s)
            term = kind.blue_messages(part, level, x, cb, module, slots[s].gradients, slots[s].aux)
            if term is not None:
                total = term if total is None else total + term
        return total

    def layer_output(self, i: int, messages: list[Tensor]) -> Tensor:
        """Layer ``i``'s output from its messages: the backbone's layer, then ReLU except in
        the output layer. Training, VQ inference and exact inference all go through here."""
        z = self.layers[i](messages)
        return F.relu(z) if i < len(self.layers) - 1 else z

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
        h = initial = None
        for i in range(len(self.layers) if upto is None else upto + 1):
            if i == 0:
                messages = self.input_messages(batch)
            else:
                initial = h if i == 1 else initial  # the first layer's output
                x, extra = h, None
                if blue and batch.backward:
                    extra = self.blue_messages(batch, i - 1, h.detach())
                if extra is not None:
                    x = AddGradient.apply(x, extra)
                messages, lses = self.aggregate(
                    batch, i - 1, dropout(x, self.dropout, self.training), initial
                )
                if self.training:
                    slots = self.channels(i - 1)
                    kept = [s for s in range(len(self.kinds)) if len(slots[s].gradients)]
                    for s in kept:
                        messages[s].retain_grad()
                    traces.append(
                        LayerTrace(
                            x=h,
                            kinds=[self.kinds[s] for s in kept],
                            messages=[messages[s] for s in kept],
                            lse=[None if lses[s] is None else lses[s].detach() for s in kept],
                            blue=extra,
                        )
                    )
            h = self.layer_output(i, messages)
        return h, traces
