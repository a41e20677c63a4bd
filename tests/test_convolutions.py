"""DESIGN §8: the convolution kinds' Eq. 6 and Eq. 7 are exact at k >= n, through the model's
own forward and backward, at every depth and for every backbone.

The reference is the model's forward and backward over the whole graph, whose messages are in
turn checked against a dense computation (dense convolution matrices, dense masked softmax),
independently of the sparse code paths.
"""

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F_

from skvqgnn.attention import AttentionConvolution
from skvqgnn.convolutions import (
    Attention,
    Convolution,
    Fixed,
    GraphData,
    Identity,
    Initial,
    Part,
    make_batch,
)
from skvqgnn.graph import Graph, attention_mask, mean_norm
from skvqgnn.layers import BACKBONES, VQGNN, Backbone
from skvqgnn.sketch import split_batch_edges
from skvqgnn.training import gradient_channels
from skvqgnn.vq import AssignmentTable

from .conftest import random_graph

N, F_IN, F, OUT, D = 40, 5, 10, 3, 4  # F = 10 is not a multiple of D: the last slice is padded
CPU = torch.device("cpu")
ALL = ["gcn", "sage", "gin", "gat", "transformer", "gcnii", "cosine", "mean"]


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


class Mean(Convolution):
    """A user-defined convolution kind: every node receives the graph's mean input,
    ``C = 11ᵀ / n``. A new kind is this one class: its batch data (how many out-of-batch nodes
    each codeword stands for), Eq. 6, Eq. 7 and its exact pass."""

    backward_by_default = True

    def prepare(self, graph):
        self.n = graph.n_nodes
        self.mean = np.asarray(graph.X.mean(0), dtype=np.float32)[None]  # (1, f0)

    def batch(self, ctx, edges, tedges, backward):
        b = len(ctx.nodes)
        part = Part(inputs=torch.from_numpy(np.repeat(self.mean, b, 0)).to(ctx.device))
        for level, table in enumerate(ctx.tables):
            part.senders.append(_outside_counts(table.codes, table.usage, ctx.nodes))
            if backward:
                marked, usage = ctx.nodes, table.grad_usage
                if ctx.restricted(level):  # the output layer: receivers with a loss only
                    marked = ctx.nodes[ctx.receivers[ctx.nodes]]
                    usage = _usage(table.grad_codes[ctx.receivers], table.n_codewords)
                part.receivers.append(_outside_counts(table.grad_codes, usage, marked))
        return part

    @classmethod
    def n_channels(cls, attention):
        return 1

    @classmethod
    def messages(cls, part, level, x, initial, codebook, attention, network):
        counts = part.senders[level] if part.senders else None  # (P, k)
        total = x.sum(0)
        if counts is not None:  # out-of-batch senders: Σ_v count_v X̃_v per slice
            total = total + codebook.merge(torch.einsum("pk,pkd->pd", counts, codebook.codewords))
        n = x.shape[0] if counts is None else x.shape[0] + int(counts[0].sum())
        return (total / n).expand(x.shape[0], -1), None

    @classmethod
    def blue_messages(cls, part, level, x, codebook, attention, channels, aux):
        if not part.receivers:
            return None
        counts = part.receivers[level]
        n = x.shape[0] + int(part.senders[level][0].sum())
        c = channels.start
        g = codebook.grad_codewords[c] * codebook.grad_trust[c]  # (P, k, D)
        return (codebook.merge(torch.einsum("pk,pkd->pd", counts, g)) / n).expand_as(x)

    @classmethod
    def gradient_channels(cls, messages, grad, lse):
        return [grad], []

    def exact_messages(self, layer, source, initial, rows, attention, network, device):
        mean = self.mean if layer == 0 else source.mean(0, keepdims=True)
        return torch.from_numpy(np.repeat(mean, len(rows), 0)).to(device)


def _usage(codes, k):
    return np.stack([np.bincount(codes[:, p], minlength=k) for p in range(codes.shape[1])])


def _outside_counts(codes, usage, inside):
    """(P, k) nodes per codeword outside ``inside``."""
    return torch.from_numpy((usage - _usage(codes[inside], usage.shape[1])).astype(np.float32))


class MeanBackbone(Backbone):
    """``Z = X W₁ + (11ᵀ/n) X W₂ + b`` with the default layer."""

    name = "mean"
    n_convolutions = 2

    def convolutions(self, A):
        return [Identity(), Mean()]


def _backbone(name):
    if name == "cosine":
        return CosineBackbone()
    if name == "mean":
        return MeanBackbone()
    if name == "gat":  # hidden layers concatenate 2 heads, the output layer averages 2
        return BACKBONES["gat"](heads=2, output_heads=2)
    return BACKBONES[name](heads=2) if name == "transformer" else BACKBONES[name]()


def _setup(name: str, n_levels: int, symmetric: bool = True, seed: int = 0, n: int = N):
    """A model with ``n_levels`` codebook levels (``n_levels + 1`` layers) and k = n codewords,
    on a random graph; weights and loss weights drawn from ``seed``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    A = random_graph(n, 5.0, seed, symmetric=symmetric)
    graph = Graph(A, rng.normal(size=(n, F_IN)))
    backbone = _backbone(name)
    data = GraphData(graph, backbone)
    D_ = None if name == "transformer" else D  # global attention: whole-vector codewords
    dims = [F_IN, *([F] * n_levels), OUT]
    model = VQGNN(backbone, data.kinds, dims, n, D_, 0.99, 1.0, 0.0).train()
    U = torch.randn(n, OUT)  # loss weights: loss = <Z, U>
    return data, model, U


def _full_batch(data):
    return make_batch(data, np.arange(data.n_nodes), [], CPU)


def _full_graph(data, model, U, weight=None):
    """The model's own forward and backward over the whole graph (every message exact) of
    the loss <Z, U>: logits, per level the layer input, its gradient, the gradient channels
    and auxiliary scalars, and per layer the gradient of its pre-activation output."""
    model.zero_grad()
    outputs = []
    hooks = [
        layer.register_forward_hook(lambda _m, _i, out: outputs.append(out) or out.retain_grad())
        for layer in model.layers
    ]
    try:
        logits, traces = model(_full_batch(data))
    finally:
        for hook in hooks:
            hook.remove()
    for t in traces:
        t.x.retain_grad()
    (logits * U).sum().backward()
    levels = []
    for t in traces:
        G, aux = gradient_channels(t)
        levels.append((t.x.detach(), t.x.grad.clone(), G, aux))
    deltas = [z.grad.clone() for z in outputs]
    model.zero_grad()
    return logits.detach(), levels, deltas


def _layer_inputs(data, model, levels):
    """Per layer, a callable giving its messages over the whole graph from fixed inputs."""
    full = _full_batch(data)
    out = [lambda: model.input_messages(full)]
    initial = levels[0][0]  # the first layer's output
    for level, (h, _, _, _) in enumerate(levels):
        out.append(lambda level=level, h=h: model.aggregate(full, level, h, initial)[0])
    return out


def _restricted_parameter_gradients(data, model, levels, deltas, batch):
    """Per layer, the full graph's gradient of its parameters restricted to the batch rows:
    ∂/∂θ Σ_{i ∈ B} <z_i(θ), δ_i> with the layer's inputs fixed at their full-graph values."""
    grads = {}
    inputs = _layer_inputs(data, model, levels)
    for i, (messages, delta) in enumerate(zip(inputs, deltas, strict=True)):
        layer = model.layers[i]
        layer.zero_grad()
        z = layer(messages())
        (z[batch] * delta[batch]).sum().backward()
        grads.update({f"layers.{i}.{k}": p.grad.clone() for k, p in layer.named_parameters()})
        layer.zero_grad()
    return grads


def _identity_tables(data, model, levels, garbage=None):
    """k = n, every node its own codeword in every slice, codewords set to the true inputs,
    gradients and auxiliary scalars (plus ``garbage`` (n,) added to the gradient parts, for
    the last level); the input codebook set to the raw features."""
    n = data.n_nodes
    identity = np.repeat(np.arange(n)[:, None], 1, axis=1)
    tables = []
    for level, (cb, (h, _, G, aux)) in enumerate(zip(model.codebooks, levels, strict=True)):
        if garbage is not None and level == len(levels) - 1:
            G = G + garbage[None, :, None]
            aux = None if aux is None else aux + garbage[None, :]
        cb.feature_sums.copy_(cb.split(h).transpose(0, 1))
        cb.grad_feature_sums.copy_(cb.feature_sums)
        cb.grad_sums.copy_(cb.split(G).transpose(1, 2))
        if aux is not None:
            cb.aux_sums.copy_(aux[:, None, :].expand(-1, cb.n_slices, -1))
        for buffer in (cb.counts, cb.grad_counts, cb.trust_num, cb.trust_den):
            buffer.fill_(1.0)
        table = AssignmentTable(n, cb.n_slices, n)
        table.set_both(np.arange(n), np.repeat(identity, cb.n_slices, axis=1))
        tables.append(table)
    input_table = None
    if model.input_codebook is not None:
        icb = model.input_codebook
        icb.feature_sums.copy_(torch.from_numpy(data.graph.X).unsqueeze(0))
        icb.counts.fill_(1.0)
        input_table = AssignmentTable(n, 1, n)
        input_table.set_both(np.arange(n), identity)
    return tables, input_table


def _batch_step(data, model, U, batch, tables, input_table, receivers=None):
    """The model's own training step on ``batch`` with backward messages: logits, per level
    the gradient of the layer input, and every parameter's gradient."""
    model.zero_grad()
    b = make_batch(data, batch, tables, CPU, True, receivers, input_table)
    logits, traces = model(b, blue=True)
    for t in traces:
        t.x.retain_grad()
    (logits * U[batch]).sum().backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    return logits.detach(), [t.x.grad.clone() for t in traces], grads


@pytest.mark.parametrize("n_levels", [1, 2, 3])
@pytest.mark.parametrize("backbone", ALL)
def test_exact_through_the_model_at_identity_assignment(backbone, n_levels):
    """DESIGN §8, through the model's own forward and backward at every depth: with every node
    its own codeword at every level (and in the input codebook), a batch's logits, the
    gradients of every level's input and every parameter's gradient equal the full graph's."""
    data, model, U = _setup(backbone, n_levels, symmetric=n_levels != 2)
    Z, levels, deltas = _full_graph(data, model, U)
    batch = np.sort(np.random.default_rng(1).choice(N, 12, replace=False))
    expected = _restricted_parameter_gradients(data, model, levels, deltas, batch)
    tables, input_table = _identity_tables(data, model, levels)
    Z_B, grads_B, params_B = _batch_step(data, model, U, batch, tables, input_table)

    torch.testing.assert_close(Z_B, Z[batch], atol=1e-5, rtol=1e-5)  # forward, Eq. 6
    for (_, grad, _, _), grad_B in zip(levels, grads_B, strict=True):  # backward, Eq. 7
        torch.testing.assert_close(grad_B, grad[batch], atol=1e-5, rtol=1e-5)
    # every parameter (weights, attention vectors, GIN's ε) of every layer gets the full
    # graph's gradient restricted to the batch rows: out-of-batch senders reach the attention
    # parameters through their codewords, and the backward messages add nothing to any
    assert params_B.keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(params_B[name], value, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ALL)
def test_without_out_of_batch_terms_the_batch_misses_messages(backbone):
    """Control: zero every codeword (features, gradients, scalars, inputs) and the batch's
    logits and input gradients no longer match, so the test above has teeth."""
    data, model, U = _setup(backbone, 2)
    Z, levels, _ = _full_graph(data, model, U)
    tables, input_table = _identity_tables(data, model, levels)
    for cb in [*model.codebooks, model.input_codebook]:
        if cb is not None:
            for buffer in (cb.feature_sums, cb.grad_feature_sums, cb.grad_sums, cb.aux_sums):
                buffer.zero_()
    batch = np.arange(0, N, 4)
    Z_B, grads_B, _ = _batch_step(data, model, U, batch, tables, input_table)
    assert (Z_B - Z[batch]).abs().max() > 1e-2
    for (_, grad, _, _), grad_B in zip(levels, grads_B, strict=True):
        assert (grad_B - grad[batch]).abs().max() > 1e-2


@pytest.mark.parametrize("backbone", ALL)
def test_full_graph_messages_match_a_dense_reference(backbone):
    """The reference above is the model's full-graph forward: its messages equal a dense
    computation (dense convolution matrices, dense masked softmax), in the first layer and
    in a VQ layer."""
    data, model, _ = _setup(backbone, 1, symmetric=False)
    full = _full_batch(data)
    X1, H0 = torch.randn(N, F), torch.randn(N, F)
    X0 = torch.from_numpy(data.graph.X)
    for got, (expected, _), conv_layer in (
        (model.aggregate(full, 0, X1, H0)[0], _dense_messages(data, model, X1, 1, H0), 1),
        (model.input_messages(full), _dense_messages(data, model, X0, 0), 0),
    ):
        for s in range(len(data.kinds)):
            e = expected[s]
            conv = model.attention(conv_layer, s)
            if conv_layer == 0 and conv is not None and hasattr(conv, "value"):
                e = torch.einsum("bhf,hfd->bhd", e, conv.weight)  # GAT: projected values
            g = got[s].to_dense() if got[s].layout != torch.strided else got[s]
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backbone", ALL)
def test_last_layer_backward_messages_come_only_from_nodes_with_a_loss(backbone):
    """The output layer's gradient is zero for nodes without a loss term; their codewords'
    gradient parts (here garbage) must not reach the batch when ``receivers`` marks them out."""
    data, model, U = _setup(backbone, 2)
    targets = np.random.default_rng(2).random(N) < 0.3
    U = U * torch.from_numpy(targets).float()[:, None]  # loss on the targets only
    _, levels, _ = _full_graph(data, model, U)
    garbage = 5.0 * torch.from_numpy(~targets).float()
    tables, input_table = _identity_tables(data, model, levels, garbage)
    batch = np.arange(0, N, 3)
    _, grads_B, _ = _batch_step(data, model, U, batch, tables, input_table, targets)
    for (_, grad, _, _), grad_B in zip(levels, grads_B, strict=True):
        torch.testing.assert_close(grad_B, grad[batch], atol=1e-5, rtol=1e-5)
    _, grads_all, _ = _batch_step(data, model, U, batch, tables, input_table)
    assert (grads_all[-1] - levels[-1][1][batch]).abs().max() > 1e-2


def _dense_attention(conv, X, mask):
    """Masked softmax attention computed densely: messages (n, H, f) and log normalisers (n, H)."""
    s = conv.dense_score(conv.query(X), conv.key(X))  # (n, n, H)
    if mask is not None:
        s = s.masked_fill(~mask[:, :, None], -torch.inf)
    lse = torch.logsumexp(s, dim=1)
    return torch.einsum("ijh,jf->ihf", torch.exp(s - lse[:, None]), X), lse


def _dense_messages(data, model, X, layer, initial=None):
    messages, lses = [], []
    for s, conv in enumerate(data.convolutions):
        M = conv.matrix
        if isinstance(conv, Identity):
            messages.append(X)
        elif isinstance(conv, Initial):
            messages.append(X if layer == 0 else initial)
        elif isinstance(conv, Fixed):  # C, its diagonal included
            C = conv.block(0, len(X))
            messages.append(torch.from_numpy(C.toarray()) @ X)
        elif isinstance(conv, Mean):
            messages.append(torch.full((len(X), len(X)), 1.0 / len(X)) @ X)
        else:
            assert isinstance(conv, Attention)
            mask = None if M is None else torch.from_numpy(M.toarray() != 0)
            m, lse = _dense_attention(model.attention(layer, s), X, mask)
            messages.append(m)
            lses.append(lse)
    return messages, lses


@pytest.mark.parametrize("backbone", ["gcn", "sage"])
def test_a_fixed_block_is_the_convolution_with_its_diagonal(backbone):
    """`Fixed.block` gives rows of ``C`` and of ``Cᵀ`` with the diagonal kept apart (GCN's
    self-loops) put back: rows of `gcn_norm` / `mean_norm` of a directed graph."""
    from skvqgnn.graph import gcn_norm, mean_norm

    A = random_graph(200, 5, seed=4, symmetric=False)
    graph = Graph(A, np.ones((200, 2)))
    conv = next(
        c for c in GraphData(graph, BACKBONES[backbone]()).convolutions if c.matrix is not None
    )
    C = gcn_norm(graph.A) if backbone == "gcn" else mean_norm(graph.A)
    assert (conv.diagonal is not None) == (backbone == "gcn")
    for lo, hi in [(0, 200), (37, 120)]:
        for transposed, want in [(False, C), (True, C.T.tocsr())]:
            got = conv.block(lo, hi, transposed=transposed)
            assert got.has_sorted_indices and got.shape == (hi - lo, 200)
            np.testing.assert_allclose(got.toarray(), want[lo:hi].toarray(), rtol=1e-6)


@pytest.mark.parametrize("backbone", ["gcn", "sage", "gin"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_a_fixed_convolution_knows_whether_c_is_symmetric(backbone, symmetric):
    """``C`` is symmetric when ``A`` is and the row and column scales agree: GCN's and GIN's
    on an undirected graph, never GraphSAGE's ``D⁻¹A`` (whose partition then stores its
    transposed rows), as the explicit matrix says."""
    from skvqgnn.graph import is_symmetric

    A = random_graph(150, 5, seed=2, symmetric=symmetric)
    graph = Graph(A, np.ones((150, 2)))
    conv = next(
        c for c in GraphData(graph, BACKBONES[backbone]()).convolutions if c.matrix is not None
    )
    assert conv.is_symmetric() == is_symmetric(conv.block(0, 150))
    assert conv.is_symmetric() == (symmetric and backbone != "sage")


@pytest.mark.parametrize("inference", ["vq", "exact"])
def test_gcn_with_its_diagonal_apart_fits_as_with_one_matrix(inference):
    """The built-in gcn keeps its self-loops as a diagonal beside the adjacency's pattern; a
    backbone handing the package `gcn_norm`'s single matrix is the same network: the same
    losses and predictions, to float32 rounding, through the estimator's fit (first-layer
    inputs, intra-batch messages and their gradients) and either inference."""
    from skvqgnn import VQGNNClassifier
    from skvqgnn.datasets import make_csbm
    from skvqgnn.graph import gcn_norm
    from skvqgnn.layers import GCN

    class OneMatrix(GCN):
        def convolutions(self, A):
            return [Fixed(gcn_norm(A))]

    A, X, y, _ = make_csbm(600, 3, avg_degree=8, n_features=16, random_state=0)
    graph = Graph(A, X)
    fits = []
    for backbone in (GCN(), OneMatrix()):
        clf = VQGNNClassifier(
            backbone=backbone,
            hidden_layer_sizes=(16, 16),
            max_epochs=4,
            batch_size=128,
            n_codewords=16,
            random_state=0,
            inference=inference,
        ).fit(graph.nodes(), y)
        fits.append(clf)
    apart, one = fits
    assert one.history_ and len(apart.history_) == len(one.history_)
    np.testing.assert_allclose(
        [h["loss"] for h in apart.history_], [h["loss"] for h in one.history_], rtol=1e-4
    )
    np.testing.assert_allclose(
        apart.predict_proba(graph.nodes()), one.predict_proba(graph.nodes()), atol=1e-3
    )


def test_no_module_compares_a_convolution_kind_by_name():
    """Kinds are classes: no comparison in the package involves a kind's name."""
    import ast
    from pathlib import Path

    names = {kind.name for kind in (Identity, Fixed, Attention, *Attention.__subclasses__())}
    assert {"identity", "fixed", "attention", "global"} <= names
    package = Path(__file__).resolve().parents[1] / "skvqgnn"
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                strings = {
                    c.value
                    for c in ast.walk(node)
                    if isinstance(c, ast.Constant) and isinstance(c.value, str)
                }
                if strings & names:
                    found.append(f"{path.name}:{node.lineno}")
    assert not found


def test_a_user_defined_kind_fits_pickles_and_predicts():
    """A new kind needs nothing but its class: the estimator fits and predicts with it in both
    inference modes, and a pickled model keeps its kinds."""
    import pickle

    from skvqgnn import VQGNNClassifier

    A = random_graph(60, 4.0, 0)
    X = np.random.default_rng(0).normal(size=(60, 4))
    y = np.arange(60) % 2
    clf = VQGNNClassifier(
        MeanBackbone(), batch_size=20, n_codewords=8, max_epochs=3, random_state=0
    )
    clf.fit(A, X, y)
    assert clf.model_.kinds == [Identity, Mean]
    assert clf.history_[-1]["blue_message_norm"][0] > 0  # Eq. 7 of the new kind
    again = pickle.loads(pickle.dumps(clf))
    assert again.model_.kinds == [Identity, Mean]
    np.testing.assert_array_equal(again.predict_proba(A, X), clf.predict_proba(A, X))
    exact = clf.set_params(inference="exact").predict_proba(A, X)
    assert np.isfinite(exact).all() and exact.shape == (60, 2)


def test_several_batches_at_once_need_a_network_without_attention():
    data, _, _ = _setup("gat", 1)
    nodes = np.arange(10)
    with pytest.raises(ValueError, match="without attention"):
        make_batch(data, nodes, [], CPU, segment=nodes % 2)
    data, _, _ = _setup("gcn", 1)
    assert make_batch(data, nodes, [], CPU, segment=nodes % 2).parts


@pytest.mark.parametrize("symmetric", [True, False])
def test_sage_backward_entries_come_from_its_rows_on_an_undirected_graph(symmetric):
    """GraphSAGE's ``C = D⁻¹A``: on an undirected graph a batch's rows of ``Cᵀ = A D⁻¹`` come
    from the same gather of ``A``'s rows, scaled by the senders' degrees, so no transpose is
    built; on a directed graph ``Aᵀ`` is. Both give the entries of `mean_norm`'s explicit
    transpose (weighted: to rounding; unit weights: exactly)."""
    rng = np.random.default_rng(0)
    for weighted in (False, True):
        A = random_graph(300, 6, seed=3, symmetric=symmetric)
        if weighted:
            A.data = rng.random(A.nnz) + 0.5
            if symmetric:
                A = ((A + A.T) / 2).tocsr()
        data = GraphData(Graph(A, rng.random((300, 4))), BACKBONES["sage"]())
        conv = data.convolutions[1]
        nodes = np.sort(rng.choice(300, 60, replace=False))
        position = np.full(300, -1, dtype=np.int32)
        position[nodes] = np.arange(60)
        _, tedges = conv.split(nodes, position, backward=True)
        assert (conv.transposed() is conv.matrix) == symmetric  # no transpose built
        Ct = mean_norm(data.graph.A).T.tocsr()
        Ct.sort_indices()
        expected = split_batch_edges(Ct, nodes, position)
        for name in ("in_rows", "in_cols", "out_rows", "out_nodes", "cols"):
            np.testing.assert_array_equal(getattr(tedges, name), getattr(expected, name))
        for name in ("in_vals", "out_vals", "vals"):
            got, want = getattr(tedges, name), getattr(expected, name)
            if weighted:
                np.testing.assert_allclose(got, want, rtol=1e-6)
            else:
                np.testing.assert_array_equal(got, want)
