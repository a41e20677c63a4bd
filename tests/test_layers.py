"""DESIGN §8: exactness at k >= n, and approximation error falling as k grows, for every backbone.

The full-graph reference is computed densely here (dense convolution matrices, dense masked
softmax), independently of the sparse code paths under test.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F_

from skvqgnn._base import GraphData, _exact_messages, make_batch
from skvqgnn.graph import Graph, attention_mask
from skvqgnn.layers import (
    BACKBONES,
    VQGNN,
    AddGradient,
    Attention,
    AttentionConvolution,
    Backbone,
    attend,
)
from skvqgnn.vq import AssignmentTable

from .conftest import random_graph

N, F_IN, F, OUT, D = 48, 5, 10, 3, 4  # F = 10 is not a multiple of D: the last slice is padded
ALL = ["gcn", "sage", "gin", "gat", "transformer", "cosine"]


class CosineAttention(AttentionConvolution):
    """A user-defined learnable convolution (AGNN-style): ``β cos(x_i, x_j)`` over N(i) ∪ {i}."""

    heads = 1

    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(2.0))

    def query(self, x):
        return F_.normalize(x, dim=-1).unsqueeze(1)

    def key(self, x):
        return self.beta * F_.normalize(x, dim=-1).unsqueeze(1)

    def score(self, q, k):
        return (q * k).sum(-1)


class CosineLayer(nn.Module):
    def __init__(self, in_features, out_features):
        super().__init__()
        self.attention = nn.ModuleList([CosineAttention()])
        self.linear = nn.Linear(in_features, out_features)

    def forward(self, messages):
        return self.linear(messages[0][:, 0])


class CosineBackbone(Backbone):
    """Adding a backbone is adding one class: no change to the package."""

    name = "cosine"

    def convolutions(self, A):
        return [Attention(attention_mask(A))]

    def layer(self, in_features, out_features, *, first, last):
        return CosineLayer(in_features, out_features)


def _backbone(name):
    if name == "cosine":
        return CosineBackbone()
    return BACKBONES[name](heads=2) if name in ("gat", "transformer") else BACKBONES[name]()


def _model(name, data, k, decay=0.99):
    # GAT: hidden layers concatenate heads; here the VQ layer is the output layer (2 output heads)
    backbone = _backbone(name)
    if name == "gat":
        backbone.output_heads = 2
    D_ = None if name == "transformer" else D  # global attention: whole-vector codewords
    model = VQGNN(backbone, data.kinds, [F_IN, F, OUT], k, D_, decay, 1.0, 0.0)
    return model.eval()


def _setup(name: str, k: int, symmetric: bool, seed: int = 0, n: int = N):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    A = random_graph(n, 5.0, seed, symmetric=symmetric)
    graph = Graph(A, rng.normal(size=(n, F_IN)))
    data = GraphData(graph, _backbone(name))
    model = _model(name, data, k)
    X1 = torch.randn(n, F, dtype=torch.float32)  # the VQ layer's input for every node
    U = torch.randn(n, OUT)  # loss weights: loss = <Z, U>
    return data, model, X1, U


def _dense_attention(conv, X, mask):
    """Masked softmax attention computed densely: messages (n, H, f) and log normalisers (n, H)."""
    s = conv.dense_score(conv.query(X), conv.key(X))  # (n, n, H)
    if mask is not None:
        s = s.masked_fill(~mask[:, :, None], -torch.inf)
    lse = torch.logsumexp(s, dim=1)
    return torch.einsum("ijh,jf->ihf", torch.exp(s - lse[:, None]), X), lse


def _full_messages(data, model, X):
    messages, lses = [], []
    for s, (kind, M) in enumerate(zip(data.kinds, data.matrices, strict=True)):
        if kind == "identity":
            messages.append(X)
        elif kind == "fixed":
            messages.append(torch.from_numpy(M.toarray()) @ X)
        else:
            mask = None if M is None else torch.from_numpy(M.toarray() != 0)
            m, lse = _dense_attention(model._attention(1, s), X, mask)
            messages.append(m)
            lses.append(lse)
    return messages, lses


def _full_graph(data, model, X1, U, batch=None):
    """Full-graph layer output Z, dL/dX1, the gradient channels (S, n, f) and auxiliary scalars
    (A, n) of the codebook, and the parameters' gradients of the batch rows' loss."""
    X = X1.clone().requires_grad_(True)
    messages, lses = _full_messages(data, model, X)
    kept = [m for m, kind in zip(messages, data.kinds, strict=True) if kind != "identity"]
    for m in kept:
        m.retain_grad()
    layer = model.layers[1]
    Z = layer(messages)
    (Z * U).sum().backward()
    channels, aux = [], []
    lse_iter = iter(lses)
    for m in kept:
        if m.dim() == 3:
            channels.extend(m.grad.unbind(1))
            aux.extend([(m.grad * m.detach()).sum(-1).T, next(lse_iter).detach().T])
        else:
            channels.append(m.grad)
    param_grads = None
    if batch is not None:
        layer.zero_grad()
        Zb = layer(_full_messages(data, model, X1)[0])
        (Zb[batch] * U[batch]).sum().backward()
        param_grads = {k: p.grad.clone() for k, p in layer.named_parameters()}
        layer.zero_grad()
    aux_t = torch.cat(aux) if aux else None
    return Z.detach(), X.grad, torch.stack(channels), aux_t, param_grads


def _batch_layer(data, model, X1, U, batch, tables, receivers=None):
    k = model.codebooks[0].n_codewords
    batch_t = make_batch(data, batch, tables, k, torch.device("cpu"), True, receivers)
    x_B = X1[batch].clone().requires_grad_(True)
    extra = model.blue_messages(batch_t, 0, x_B.detach())
    x = AddGradient.apply(x_B, extra) if extra is not None else x_B
    layer = model.layers[1]
    Z_B = layer(model.aggregate(batch_t, 0, x)[0])
    layer.zero_grad()
    (Z_B * U[batch]).sum().backward()
    grads = {k: p.grad.clone() for k, p in layer.named_parameters()}
    return Z_B.detach(), x_B.grad, grads


def _set_exact_codebook(model, X1, G, aux):
    """k = n, r_p(j) = j, codewords = true features, gradients and auxiliary scalars."""
    cb = model.codebooks[0]
    n = X1.shape[0]
    cb.feature_sums.copy_(cb.split(X1).transpose(0, 1))
    cb.grad_sums.copy_(cb.split(G).transpose(1, 2))
    if aux is not None:
        cb.aux_sums.copy_(aux[:, None, :].expand(-1, cb.n_slices, -1))
    cb.counts.fill_(1.0)
    cb.grad_counts.fill_(1.0)
    table = AssignmentTable(n, cb.n_slices, cb.n_codewords)
    table.set(np.arange(n), np.repeat(np.arange(n)[:, None], cb.n_slices, axis=1))
    return table


@pytest.mark.parametrize("backbone", ALL)
@pytest.mark.parametrize("symmetric", [True, False])
def test_exact_at_identity_assignment(backbone, symmetric):
    data, model, X1, U = _setup(backbone, k=N, symmetric=symmetric)
    batch = np.sort(np.random.default_rng(1).choice(N, 12, replace=False))
    Z, grad_X, G, aux, param_grads = _full_graph(data, model, X1, U, batch)
    table = _set_exact_codebook(model, X1, G, aux)
    Z_B, grad_B, batch_param_grads = _batch_layer(data, model, X1, U, batch, [table])

    # forward Eq. 6: the batch rows equal the full-graph rows
    torch.testing.assert_close(Z_B, Z[batch], atol=1e-5, rtol=1e-5)
    # backward Eq. 7: the batch-row gradient equals the full-graph gradient
    torch.testing.assert_close(grad_B, grad_X[batch], atol=1e-5, rtol=1e-5)
    # every parameter (weights, attention vectors, GIN's ε) gets the gradient of the batch rows'
    # loss in the full graph: out-of-batch senders reach the attention parameters through their
    # codewords, and the blue messages add nothing to any parameter
    assert param_grads.keys() == batch_param_grads.keys()
    for name, expected in param_grads.items():
        torch.testing.assert_close(batch_param_grads[name], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ALL)
def test_without_codewords_the_batch_misses_messages(backbone):
    """Control: dropping the out-of-batch terms breaks exactness, so the test above has teeth."""
    data, model, X1, U = _setup(backbone, k=N, symmetric=True)
    Z, grad_X, G, aux, _ = _full_graph(data, model, X1, U)
    table = _set_exact_codebook(model, X1, G, aux)
    cb = model.codebooks[0]
    cb.feature_sums.zero_()
    cb.grad_sums.zero_()
    cb.aux_sums.zero_()
    batch = np.arange(0, N, 4)
    Z_B, grad_B, _ = _batch_layer(data, model, X1, U, batch, [table])
    assert (Z_B - Z[batch]).abs().max() > 1e-2
    assert (grad_B - grad_X[batch]).abs().max() > 1e-2


@pytest.mark.parametrize("backbone", ALL)
def test_approximation_error_shrinks_with_k(backbone):
    n = 400
    data, _, X1, U = _setup(backbone, k=2, symmetric=True, seed=3, n=n)
    batch = np.arange(0, n, 5)
    errors = []
    for k in (2, 16, 128):
        torch.manual_seed(0)
        model = _model(backbone, data, k, decay=0.0)
        Z, grad_X, G, aux, _ = _full_graph(data, model, X1, U)
        cb = model.codebooks[0]
        x_all = cb.split(X1)
        codes = cb.initialise(x_all, x_all, 1.0, torch.Generator().manual_seed(0), 10)
        g_all = cb.split(G)
        for _ in range(5):  # Lloyd rounds in the joint (feature, gradient) space; decay 0 gives
            cb.update(x_all, g_all, codes, None, aux)  # the exact cluster means
            codes = cb.assign(x_all, g_all, aux)
        cb.update(x_all, g_all, codes, None, aux)
        table = AssignmentTable(n, cb.n_slices, k)
        table.set(np.arange(n), codes.numpy())
        Z_B, grad_B, _ = _batch_layer(data, model, X1, U, batch, [table])
        errors.append(
            (
                float((Z_B - Z[batch]).norm() / Z[batch].norm()),
                float((grad_B - grad_X[batch]).norm() / grad_X[batch].norm()),
            )
        )
    forward, backward = zip(*errors, strict=True)
    assert forward[0] > forward[1] > forward[2]
    assert backward[0] > backward[1] > backward[2]
    # random Gaussian inputs are the hard case for VQ; whole-vector codewords (transformer) and
    # the attention receivers' per-slice scalars (gat) shrink more slowly than fixed convolutions
    factor = 0.5 if backbone in ("gcn", "sage", "gin") else 0.7
    assert forward[2] < factor * forward[0] and backward[2] < factor * backward[0]


@pytest.mark.parametrize("backbone", ALL)
def test_last_layer_backward_messages_come_only_from_nodes_with_a_loss(backbone):
    """The output layer's gradient is zero for nodes without a loss term; their codewords'
    gradient parts (here garbage) must not reach the batch when ``receivers`` marks them out."""
    data, model, X1, U = _setup(backbone, k=N, symmetric=True)
    targets = np.random.default_rng(2).random(N) < 0.3
    U = U * torch.from_numpy(targets).float()[:, None]  # loss on the targets only
    Z, grad_X, G, aux, _ = _full_graph(data, model, X1, U)
    off = torch.from_numpy(~targets).float()
    garbage_aux = None if aux is None else aux + 5.0 * off[None, :]
    table = _set_exact_codebook(model, X1, G + 5.0 * off[None, :, None], garbage_aux)
    batch = np.arange(0, N, 3)
    _, grad_B, _ = _batch_layer(data, model, X1, U, batch, [table], targets)
    torch.testing.assert_close(grad_B, grad_X[batch], atol=1e-5, rtol=1e-5)
    _, grad_all, _ = _batch_layer(data, model, X1, U, batch, [table])
    assert (grad_all - grad_X[batch]).abs().max() > 1e-2


@pytest.mark.parametrize("backbone", ["gat", "gin", "transformer", "cosine"])
def test_first_layer_is_exact(backbone):
    """Layer 1 aggregates the raw features: masked attention gathers the batch's out-of-batch
    neighbours' features, so its batch messages equal the full-graph ones."""
    data, model, _, _ = _setup(backbone, k=N, symmetric=False)
    X = torch.from_numpy(data.graph.X)
    batch = np.sort(np.random.default_rng(4).choice(N, 10, replace=False))
    batch_t = make_batch(data, batch, [], N, torch.device("cpu"), False)
    got = model.input_messages(batch_t)
    rows = _exact_messages(model, data, 0, None, batch, torch.device("cpu"))
    for s, kind in enumerate(data.kinds):
        if kind == "global":
            assert got[s] is None and rows[s] is None  # no global attention over raw features
            continue
        if kind == "attention":
            mask = torch.from_numpy(data.matrices[s].toarray() != 0)
            conv = model._attention(0, s)
            expected = _dense_attention(conv, X, mask)[0][batch]  # (b, H, f0)
            if hasattr(conv, "value"):  # GAT aggregates its projected values
                expected = torch.einsum("bhf,hfd->bhd", expected, conv.weight)
        else:
            expected = rows[s].to_dense() if rows[s].is_sparse else rows[s]
        g = got[s].to_dense() if got[s].is_sparse else got[s]
        torch.testing.assert_close(g, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("global_", [False, True])
def test_attention_dropout_drops_whole_terms_and_is_unbiased(global_):
    """``attend(dropout=p)`` zeroes each attention weight with probability p and rescales the
    rest: on average it gives the undropped messages; ``p=0`` changes nothing."""
    torch.manual_seed(0)
    conv = BACKBONES["gat"]().layer(6, 8, first=False, last=False).attention[0]
    if global_:
        conv = BACKBONES["transformer"]().layer(6, 8, first=False, last=False).attention[0]
    x = torch.randn(30, 6)
    edges = None
    if not global_:
        rows = torch.arange(10).repeat_interleave(5)
        cols = torch.randint(30, (50,))
        edges = (rows, cols)
    M, lse = attend(conv, 10, x, edges)
    M0, lse0 = attend(conv, 10, x, edges, dropout=0.0)
    torch.testing.assert_close(M0, M)
    draws = [attend(conv, 10, x, edges, dropout=0.5) for _ in range(2000)]
    # the log normaliser is the undropped one; single draws differ, their mean does not
    torch.testing.assert_close(draws[0][1], lse)
    assert (draws[0][0] - M).abs().max() > 1e-2
    mean = torch.stack([d[0] for d in draws]).mean(0)
    assert (mean - M).abs().max() < 0.1 * M.abs().max()
