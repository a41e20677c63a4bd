"""Inductive prediction: new nodes added to the training graph, entirely new graphs, and training
on several graphs given as one block-diagonal adjacency."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from skvqgnn import Graph, VQGNNClassifier, inference
from skvqgnn.convolutions import GraphData, make_batch
from skvqgnn.datasets import make_csbm
from skvqgnn.inference import assign_new_graph
from skvqgnn.layers import make_backbone
from skvqgnn.samplers import ClusterSampler, RandomNodeSampler

FAST = dict(
    max_epochs=30, batch_size=100, n_codewords=16, hidden_layer_sizes=(16,), learning_rate=0.01
)
N_PART = 600  # nodes per graph


@pytest.fixture(scope="module")
def graphs():
    """Three disjoint graphs of one contextual SBM (same class means, so a model trained on one
    applies to the others): the subgraphs induced by three blocks of 600 nodes, each with an
    average degree of about 6 and homophily 0.85. A list of (A, X, y)."""
    A, X, y, _ = make_csbm(
        n_nodes=3 * N_PART,
        n_classes=3,
        avg_degree=18,
        homophily=0.85,
        n_features=16,
        feature_noise=1.0,
        random_state=0,
    )
    parts = []
    for p in range(3):
        idx = np.arange(p * N_PART, (p + 1) * N_PART)
        parts.append((A[idx][:, idx].tocsr(), X[idx], y[idx]))
    return parts


@pytest.fixture(scope="module", params=["gcn", "sage"])
def extended(request, graphs):
    """A model fitted on the subgraph induced by 80 % of the first graph's nodes (half of them
    labelled); the other 20 % and all their edges are held out. (model, A, X, y, new_idx)."""
    A, X, y = graphs[0]
    rng = np.random.default_rng(1)
    new_idx = np.sort(rng.choice(N_PART, N_PART // 5, replace=False))
    kept = np.setdiff1d(np.arange(N_PART), new_idx)
    labels = np.where(rng.random(len(kept)) < 0.5, y[kept], -1)
    clf = VQGNNClassifier(request.param, random_state=0, **FAST)
    clf.fit(A[kept][:, kept], X[kept], labels)
    return clf, A, X, y, new_idx


def _state(clf):
    """Everything predict must leave alone: parameters and codebook buffers, tables."""
    state = {k: v.clone() for k, v in clf.model_.state_dict().items()}
    tables = [(t.codes.copy(), t.usage.copy()) for t in clf.tables_]
    return state, tables, clf.graph_fingerprint_


def _assert_unchanged(clf, before):
    state, tables, fingerprint = before
    now = clf.model_.state_dict()
    assert now.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(now[key], value), key
    for (codes, usage), table in zip(tables, clf.tables_, strict=True):
        np.testing.assert_array_equal(table.codes, codes)
        np.testing.assert_array_equal(table.usage, usage)
    assert clf.graph_fingerprint_ == fingerprint


def test_predict_new_nodes_of_the_extended_graph(extended):
    clf, A, X, y, new_idx = extended
    before = _state(clf)
    buffers = {name for name, _ in clf.model_.codebooks[0].named_buffers()}
    assert {"counts", "feature_sums", "grad_sums", "feature_var"} <= buffers
    words = clf.model_.codebooks[0].codewords.clone()

    pred = clf.predict(A, X)
    assert pred.shape == (N_PART,)
    assert (pred[new_idx] == y[new_idx]).mean() > 0.85  # measured 0.94-0.95; chance 0.33
    view = Graph(A, X).nodes(new_idx)
    np.testing.assert_array_equal(clf.predict(view), pred[new_idx])
    np.testing.assert_allclose(
        clf.decision_function(view), clf.decision_function(A, X)[new_idx], atol=1e-5
    )
    _assert_unchanged(clf, before)
    assert torch.equal(clf.model_.codebooks[0].codewords, words)

    clf.set_params(inference="exact")
    try:
        exact = clf.predict(view)
    finally:
        clf.set_params(inference="vq")
    assert (exact == y[new_idx]).mean() > 0.85
    assert (exact == pred[new_idx]).mean() > 0.9  # measured 1.0
    _assert_unchanged(clf, before)


def _first_layer_output(clf, A, X):
    """Layer 1's input for every node, computed here from the first layer's weights:
    ``relu(Σ_s C^(s) X W^(s)ᵀ + b)`` with GCN's ``D̃^-½ (A + I) D̃^-½`` or GraphSAGE's root and
    neighbour mean."""
    X = X.astype(np.float64)
    if clf.backbone == "gcn":
        A_tilde = sp.csr_array(A, dtype=np.float64) + sp.eye_array(A.shape[0])
        d = np.asarray(A_tilde.sum(axis=1)).ravel()[:, None] ** -0.5
        messages = [d * (A_tilde @ (d * X))]
    else:
        degree = np.asarray(A.sum(axis=1)).ravel()[:, None]
        messages = [X, (A @ X) / np.maximum(degree, 1)]
    z = 0.0
    for linear, m in zip(clf.model_.layers[0].linears, messages, strict=True):
        z = z + m @ linear.weight.detach().double().numpy().T
        if linear.bias is not None:
            z = z + linear.bias.detach().double().numpy()
    return np.maximum(z, 0.0)


def test_new_nodes_get_the_nearest_standardised_feature_codeword(extended):
    clf, A, X, y, new_idx = extended
    cb = clf.model_.codebooks[0]
    P, D = cb.n_slices, cb.codeword_dim
    H = _first_layer_output(clf, A, X)  # (n, f)
    H = np.pad(H, ((0, 0), (0, P * D - H.shape[1]))).reshape(len(H), P, D)
    scale = cb.feature_var.double().numpy() ** -0.5  # (P, D): eval-mode standardisation
    words = cb.codewords.double().numpy() * scale[:, None]  # (P, k, D)
    dist = (((H * scale)[:, :, None, :] - words[None]) ** 2).sum(-1)  # (n, P, k)

    data = GraphData(Graph(A, X), make_backbone(clf.backbone))
    sampler = RandomNodeSampler(A.shape[0], clf.batch_size)
    tables, _ = assign_new_graph(clf.model_, data, sampler, torch.device("cpu"))
    codes = tables[0].codes.astype(np.int64)  # (n, P)
    chosen = np.take_along_axis(dist, codes[:, :, None], 2)[..., 0]
    best = dist.min(-1)
    np.testing.assert_allclose(chosen, best, rtol=1e-4, atol=1e-6)
    assert (codes == dist.argmin(-1))[new_idx].mean() > 0.99
    # the new nodes are spread over the codebook, not piled on one codeword
    assert len(np.unique(codes[new_idx, 0])) > 4


def test_vq_inference_on_a_new_graph_assigns_in_mini_batches_without_an_exact_pass(
    graphs, monkeypatch
):
    """On an unseen graph every level is assigned from the network's own VQ forward over the
    levels below, batch by batch: never through the exact layer-wise pass (O(n·f) host
    memory), and each node gets the nearest feature codeword of that forward's input."""
    A, X, y = graphs[0]
    params = {**FAST, "hidden_layer_sizes": (16, 16)}
    clf = VQGNNClassifier(random_state=0, **params).fit(A, X, y)
    A2, X2, y2 = graphs[1]

    def no_exact_pass(*args, **kwargs):
        raise AssertionError("VQ inference on a new graph ran the exact layer-wise pass")

    monkeypatch.setattr(inference, "exact_layers", no_exact_pass)
    pred = clf.predict(A2, X2)
    assert (pred == y2).mean() > 0.8
    graph = Graph(A2, X2)
    data = GraphData(graph, make_backbone(clf.backbone))
    sampler = ClusterSampler(graph.A, clf.batch_size, clf.parts_per_batch)
    tables, input_table = assign_new_graph(clf.model_, data, sampler, torch.device("cpu"))
    assert input_table is None  # gcn: no learnable convolution, no input codebook
    model = clf.model_.eval()
    for level, cb in enumerate(model.codebooks):
        for nodes in sampler.inference_batches():
            batch = make_batch(data, nodes, tables[:level], torch.device("cpu"))
            with torch.no_grad():
                x = cb.split(model(batch, upto=level)[0])
            inv = cb.feature_var.rsqrt()
            dist = (((x * inv)[:, :, None] - (cb.codewords * inv[:, None])[None]) ** 2).sum(-1)
            chosen = torch.from_numpy(tables[level].codes[nodes].astype(np.int64))
            got = dist.gather(2, chosen[:, :, None])[..., 0]
            torch.testing.assert_close(got, dist.min(-1).values, rtol=1e-4, atol=1e-6)


def test_predict_an_entirely_new_graph(extended, graphs):
    clf, *_ = extended
    A, X, y = graphs[2]
    before = _state(clf)
    pred = clf.predict(A, X)
    assert (pred == y).mean() > 0.8  # measured 0.88-0.89
    _assert_unchanged(clf, before)


def test_new_graph_with_other_features_is_rejected(extended, graphs):
    clf, *_ = extended
    A, X, _ = graphs[2]
    with pytest.raises(ValueError, match="X has 15 features"):
        clf.predict(A, X[:, :-1])


def test_training_on_a_block_diagonal_union_of_graphs(graphs):
    (A1, X1, y1), (A2, X2, y2), (A3, X3, y3) = graphs
    A = sp.block_diag([A1, A2], format="csr")
    X = np.vstack([X1, X2])
    rng = np.random.default_rng(2)
    labels = np.where(rng.random(2 * N_PART) < 0.3, np.concatenate([y1, y2]), -1)
    clf = VQGNNClassifier(random_state=0, **FAST).fit(A, X, labels)
    assert clf.transduction_.shape == (2 * N_PART,)
    assert (clf.predict(A3, X3) == y3).mean() > 0.8  # measured 0.91

    # no message crosses between the blocks: graph 1 inside the union or alone, same logits
    clf.set_params(inference="exact")
    union = clf.decision_function(A, X)
    np.testing.assert_allclose(union[:N_PART], clf.decision_function(A1, X1), atol=1e-5)
    np.testing.assert_allclose(union[N_PART:], clf.decision_function(A2, X2), atol=1e-5)
    assert (union.argmax(1) == np.concatenate([y1, y2])).mean() > 0.85  # measured 0.95


def test_vq_inference_runs_batches_together_with_the_outputs_of_each_alone(graphs):
    """Without attention, inference runs the sampler's batches several at a time (one step per
    group, messages between batches of a group from codewords): the logits equal those of each
    inference batch run on its own."""
    A, X, y = graphs[0]
    params = {**FAST, "hidden_layer_sizes": (16, 16), "max_epochs": 3}
    clf = VQGNNClassifier("sage", sampler="random", random_state=0, **params).fit(A, X, y)
    got = clf.decision_function(A, X)
    graph = Graph(A, X)
    data = GraphData(graph, make_backbone("sage"))
    sampler = RandomNodeSampler(graph.n_nodes, clf.batch_size)
    groups = list(inference.inference_groups(data, sampler))
    assert len(groups) == 1 and len(np.unique(groups[0][1])) == 6  # six batches, one step
    model, expected = clf.model_.eval(), np.empty_like(got)
    for nodes in sampler.inference_batches():
        batch = make_batch(data, nodes, clf.tables_, torch.device("cpu"))
        with torch.no_grad():
            expected[nodes] = model(batch)[0].numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # grouped batches still take each other's messages from codewords, not exactly
    exact = clf.set_params(inference="exact").decision_function(A, X)
    assert np.abs(exact - expected).max() > 1e-2
