"""DESIGN §8: exactness at k >= n, and approximation error falling as k grows."""

import numpy as np
import pytest
import torch

from skvqgnn._base import GraphData, make_batch
from skvqgnn.graph import Graph
from skvqgnn.layers import BACKBONES, VQGNN, AddGradient
from skvqgnn.vq import AssignmentTable

from .conftest import random_graph

N, F_IN, F, OUT, D = 48, 5, 10, 3, 4  # F = 10 is not a multiple of D: the last slice is padded


def _setup(backbone: str, k: int, symmetric: bool, seed: int = 0):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    A = random_graph(N, 5.0, seed, symmetric=symmetric)
    graph = Graph(A, rng.normal(size=(N, F_IN)))
    data = GraphData(graph, BACKBONES[backbone]())
    model = VQGNN(BACKBONES[backbone](), data.identity, [F_IN, F, OUT], k, D, 0.99, 1.0, 0.0)
    model.eval()
    X1 = torch.randn(N, F, dtype=torch.float32)  # the VQ layer's input for every node
    U = torch.randn(N, OUT)  # loss weights: loss = <Z, U>
    return data, model, X1, U


def _full_graph(data, model, X1, U):
    """Full-graph layer output Z, dL/dX1 and dL/dM^(s) for the non-identity convolutions."""
    X = X1.clone().requires_grad_(True)
    messages = [X if C is None else torch.from_numpy(C.toarray()) @ X for C in data.convolutions]
    for m in messages:
        m.retain_grad()
    Z = model.layers[1](messages)
    (Z * U).sum().backward()
    grads = [m.grad for m, C in zip(messages, data.convolutions, strict=True) if C is not None]
    return Z.detach(), X.grad, torch.stack(grads), messages


def _batch_layer(data, model, X1, U, batch, tables):
    batch_t = make_batch(
        data, batch, tables, model.codebooks[0].n_codewords, torch.device("cpu"), True
    )
    x_B = X1[batch].clone().requires_grad_(True)
    extra = model.blue_messages(batch_t, 0)
    x = AddGradient.apply(x_B, extra) if extra is not None else x_B
    Z_B = model.layers[1](model.aggregate(batch_t, 0, x))
    model.layers[1].zero_grad()
    (Z_B * U[batch]).sum().backward()
    return Z_B.detach(), x_B.grad


def _set_exact_codebook(model, X1, G):
    """k = n, r_p(j) = j, codewords = true features and gradients."""
    cb = model.codebooks[0]
    cb.feature_sums.copy_(cb.split(X1).transpose(0, 1))
    cb.grad_sums.copy_(cb.split(G).transpose(1, 2))
    cb.counts.fill_(1.0)
    cb.grad_counts.fill_(1.0)
    table = AssignmentTable(N, cb.n_slices, cb.n_codewords)
    table.set(np.arange(N), np.repeat(np.arange(N)[:, None], cb.n_slices, axis=1))
    return table


@pytest.mark.parametrize("backbone", ["gcn", "sage"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_exact_at_identity_assignment(backbone, symmetric):
    data, model, X1, U = _setup(backbone, k=N, symmetric=symmetric)
    Z, grad_X, G, messages = _full_graph(data, model, X1, U)
    table = _set_exact_codebook(model, X1, G)
    batch = np.sort(np.random.default_rng(1).choice(N, 12, replace=False))
    Z_B, grad_B = _batch_layer(data, model, X1, U, batch, [table])

    # forward Eq. 6: the batch rows equal the full-graph rows
    torch.testing.assert_close(Z_B, Z[batch], atol=1e-5, rtol=1e-5)
    # backward Eq. 7: the batch-row gradient equals the full-graph gradient
    torch.testing.assert_close(grad_B, grad_X[batch], atol=1e-5, rtol=1e-5)
    # the blue messages do not leak into the weights: W gets the batch rows' contribution only
    for linear, m in zip(model.layers[1].linears, messages, strict=True):
        expected = U[batch].T @ m.detach()[batch]
        torch.testing.assert_close(linear.weight.grad, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ["gcn", "sage"])
def test_without_codewords_the_batch_misses_messages(backbone):
    """Control: dropping the out-of-batch terms breaks exactness, so the test above has teeth."""
    data, model, X1, U = _setup(backbone, k=N, symmetric=True)
    Z, grad_X, G, _ = _full_graph(data, model, X1, U)
    _set_exact_codebook(model, X1, G)
    cb = model.codebooks[0]
    cb.feature_sums.zero_()
    cb.grad_sums.zero_()
    table = AssignmentTable(N, cb.n_slices, cb.n_codewords)
    table.set(np.arange(N), np.repeat(np.arange(N)[:, None], cb.n_slices, axis=1))
    batch = np.arange(0, N, 4)
    Z_B, grad_B = _batch_layer(data, model, X1, U, batch, [table])
    assert (Z_B - Z[batch]).abs().max() > 1e-2
    assert (grad_B - grad_X[batch]).abs().max() > 1e-2


@pytest.mark.parametrize("backbone", ["gcn", "sage"])
def test_approximation_error_shrinks_with_k(backbone):
    n = 400
    torch.manual_seed(0)
    A = random_graph(n, 6.0, seed=3)
    graph = Graph(A, np.random.default_rng(0).normal(size=(n, F_IN)))
    data = GraphData(graph, BACKBONES[backbone]())
    X1 = torch.randn(n, F)
    U = torch.randn(n, OUT)
    batch = np.arange(0, n, 5)
    errors = []
    for k in (2, 16, 128):
        torch.manual_seed(0)
        model = VQGNN(BACKBONES[backbone](), data.identity, [F_IN, F, OUT], k, D, 0.0, 1.0, 0.0)
        model.eval()
        Z, grad_X, G, _ = _full_graph(data, model, X1, U)
        cb = model.codebooks[0]
        x_all = cb.split(X1)
        codes = cb.initialise(x_all, x_all, 1.0, torch.Generator().manual_seed(0), 10)
        g_all = cb.split(G)
        for _ in range(5):  # Lloyd rounds in the joint (feature, gradient) space; decay 0 gives
            cb.update(x_all, g_all, codes)  # the exact cluster means of features and gradients
            codes = cb.assign(x_all, g_all)
        cb.update(x_all, g_all, codes)
        table = AssignmentTable(n, cb.n_slices, k)
        table.set(np.arange(n), codes.numpy())
        Z_B, grad_B = _batch_layer(data, model, X1, U, batch, [table])
        errors.append(
            (
                float((Z_B - Z[batch]).norm() / Z[batch].norm()),
                float((grad_B - grad_X[batch]).norm() / grad_X[batch].norm()),
            )
        )
    forward, backward = zip(*errors, strict=True)
    assert forward[0] > forward[1] > forward[2]
    assert backward[0] > backward[1] > backward[2]
    assert forward[2] < 0.5 * forward[0] and backward[2] < 0.5 * backward[0]


@pytest.mark.parametrize("backbone", ["gcn", "sage"])
def test_last_layer_backward_messages_come_only_from_nodes_with_a_loss(backbone):
    """The output layer's gradient is zero for nodes without a loss term; their codewords'
    gradient parts (here garbage) must not reach the batch when ``receivers`` marks them out."""
    data, model, X1, U = _setup(backbone, k=N, symmetric=True)
    targets = np.random.default_rng(2).random(N) < 0.3
    U = U * torch.from_numpy(targets).float()[:, None]  # loss on the targets only
    Z, grad_X, G, _ = _full_graph(data, model, X1, U)
    garbage = G + 5.0 * torch.from_numpy(~targets).float()[None, :, None]
    table = _set_exact_codebook(model, X1, garbage)
    batch = np.arange(0, N, 3)
    batch_t = make_batch(data, batch, [table], N, torch.device("cpu"), True, targets)
    full_t = make_batch(data, batch, [table], N, torch.device("cpu"), True)
    torch.testing.assert_close(
        model.blue_messages(batch_t, 0), _blue_truth(data, grad_X, G, batch), atol=1e-5, rtol=1e-5
    )
    assert (model.blue_messages(full_t, 0) - model.blue_messages(batch_t, 0)).abs().max() > 1e-2


def _blue_truth(data, grad_X, G, batch):
    """Σ_s over out-of-batch receivers i of C_ij ∂L/∂M_i^(s), for the batch senders j."""
    outside = np.setdiff1d(np.arange(N), batch)
    total = torch.zeros(len(batch), F)
    convs = [C for C in data.convolutions if C is not None]
    for s, C in enumerate(convs):
        block = torch.from_numpy(C.toarray()[np.ix_(outside, batch)])
        total += block.T @ G[s][outside]
    return total
