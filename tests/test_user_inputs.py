"""The classifier under the inputs a scikit-learn user has: labels in their own values, weights,
a graph smaller than a batch, a diverging fit, warm starts that change settings, scoring with
unlabelled nodes. Bad inputs and their errors are in ``test_bad_input.py``."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
from sklearn.metrics import recall_score

from skvqgnn import Callback, Graph, VQGNNClassifier

FAST = dict(
    max_epochs=15,
    batch_size=100,
    n_codewords=32,
    hidden_layer_sizes=(16,),
    learning_rate=0.01,
    random_state=0,
)
NAMES = np.array(["ant", "bee", "cat"])


@pytest.fixture(scope="module")
def graph(csbm):
    """conftest's small CSBM graph, with its training labels (-1 elsewhere)."""
    A, X, y, split = csbm
    return A, X, y, split, np.where(split.train_mask, y, -1)


@pytest.fixture(scope="module")
def reference(graph):
    A, X, _, _, labels = graph
    return VQGNNClassifier(**FAST).fit(A, X, labels)


def _as_names(labels):
    out = NAMES[np.maximum(labels, 0)].astype(object)
    out[labels < 0] = None
    return out


@pytest.mark.parametrize(
    "form",
    [
        "object with None",
        "pandas categorical",
        "numpy strings",
        "float integers",
        "float with NaN",
        "pandas nullable integers",
        "masked uint8",
        "masked with -1 as a class",
    ],
)
def test_labels_in_the_users_own_values(graph, reference, form):
    """The same fit as with integer labels, with classes_ and predictions in the user's values."""
    A, X, _, split, labels = graph
    if form == "object with None":
        y = _as_names(labels)
    elif form == "pandas categorical":
        y = pd.Series(pd.Categorical(_as_names(labels)))
    elif form == "numpy strings":  # no unlabelled marker: every node labelled
        labels = np.where(labels < 0, reference.transduction_, labels)
        y = NAMES[labels]
    elif form == "float integers":
        y = labels.astype(np.float64)
    elif form == "float with NaN":  # a pandas column with missing values
        y = np.where(labels < 0, np.nan, labels)
    elif form == "pandas nullable integers":
        y = pd.Series(pd.array(np.where(labels < 0, None, labels), dtype="Int64"))
    elif form == "masked uint8":  # a dtype that cannot say -1
        y = np.ma.masked_array((labels + 7).astype(np.uint8), mask=labels < 0)
    else:
        y = np.ma.masked_array(labels - 1, mask=labels < 0)
    clf = VQGNNClassifier(**FAST).fit(A, X, y)
    if form not in ("object with None", "pandas categorical", "numpy strings"):
        offset = {"masked uint8": 7, "masked with -1 as a class": -1}.get(form, 0)
        assert clf.classes_.tolist() == [offset, 1 + offset, 2 + offset]
        np.testing.assert_array_equal(clf.transduction_, reference.transduction_ + offset)
        np.testing.assert_allclose(clf.predict_proba(A, X), reference.predict_proba(A, X))
        assert clf.score(A, X, y) == pytest.approx(reference.score(A, X, labels))
        return
    assert clf.classes_.tolist() == NAMES.tolist()
    assert set(clf.predict(A, X)) <= set(NAMES)
    if form != "numpy strings":  # the same labelled nodes: the same network
        np.testing.assert_array_equal(clf.transduction_, NAMES[reference.transduction_])
        proba = clf.predict_proba(A, X)
        np.testing.assert_allclose(proba, reference.predict_proba(A, X), atol=1e-6)


def test_minus_one_as_a_class_says_how_to_keep_it(graph):
    A, X, y, split, _ = graph
    with pytest.raises(ValueError, match=r"one class: \[1\] \(-1 marks an unlabelled.*masked"):
        VQGNNClassifier(**FAST).fit(A, X, np.where(y == 0, -1, 1))


def test_binary_decision_function_is_one_score_per_node(graph):
    """As scikit-learn's binary classifiers: (n,) scores, positive for classes_[1], whose
    sigmoid is predict_proba[:, 1]; a roc_auc scorer takes them."""
    from scipy.special import expit
    from sklearn.metrics import get_scorer

    A, X, y, split, labels = graph
    binary = np.where(labels < 0, -1, labels == 0).astype(np.int64)
    clf = VQGNNClassifier(**FAST).fit(A, X, binary)
    scores = clf.decision_function(A, X)
    assert scores.shape == (len(y),)
    np.testing.assert_allclose(expit(scores), clf.predict_proba(A, X)[:, 1], atol=1e-5)
    np.testing.assert_array_equal(clf.classes_[(scores > 0).astype(int)], clf.predict(A, X))
    nodes = Graph(A, X).nodes(np.flatnonzero(split.test_mask))
    auc = get_scorer("roc_auc")(clf, nodes, (y == 0)[split.test_mask].astype(int))
    assert auc > 0.9


def test_boolean_labels(graph):
    A, X, y, split, _ = graph
    clf = VQGNNClassifier(**FAST).fit(A, X, y == 0)
    assert clf.classes_.tolist() == [False, True]
    assert clf.predict(A, X).dtype == bool
    assert clf.score(A, X, y == 0) > 0.8


def test_a_column_vector_is_read_as_class_labels_with_a_warning(graph, reference):
    A, X, _, _, labels = graph
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        clf = VQGNNClassifier(**FAST).fit(A, X, labels[:, None])
    assert not clf.multilabel_ and clf.classes_.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(clf.transduction_, reference.transduction_)


def test_score_leaves_unlabelled_nodes_out(graph, reference):
    A, X, y, split, _ = graph
    test_only = np.where(split.test_mask, y, -1)
    expected = np.mean(reference.predict(A, X)[split.test_mask] == y[split.test_mask])
    assert reference.score(A, X, test_only) == pytest.approx(expected)
    named = _as_names(test_only)
    clf = VQGNNClassifier(**FAST).fit(A, X, _as_names(np.where(split.train_mask, y, -1)))
    assert clf.score(A, X, named) == pytest.approx(expected)
    weights = split.test_mask * 1.0 + 0.5
    assert reference.score(A, X, test_only, sample_weight=weights) == pytest.approx(expected)


def _minority_graph(graph):
    """Class 2 with 2 labelled nodes only: unweighted training never predicts it."""
    A, X, y, split, labels = graph
    labels = labels.copy()
    labels[np.flatnonzero(labels == 2)[2:]] = -1
    return A, X, y, split.test_mask, labels


def test_class_weight_balanced_finds_a_rare_class(graph):
    A, X, y, test, labels = _minority_graph(graph)
    params = {**FAST, "max_epochs": 40}
    recall = {}
    for weight in (None, "balanced", {0: 1.0, 1: 1.0, 2: 60.0}):
        clf = VQGNNClassifier(class_weight=weight, **params).fit(A, X, labels)
        recall[str(weight)] = recall_score(y[test], clf.transduction_[test], average=None)[2]
    assert recall["None"] < 0.1
    assert recall["balanced"] > 0.5
    assert recall[str({0: 1.0, 1: 1.0, 2: 60.0})] > 0.5


def test_sample_weight_weighs_the_loss_and_its_scale_does_not_matter(graph, reference):
    A, X, y, split, labels = graph
    same = VQGNNClassifier(**FAST).fit(A, X, labels, sample_weight=np.full(len(y), 3.0))
    np.testing.assert_allclose(
        same.predict_proba(A, X), reference.predict_proba(A, X), rtol=1e-4, atol=1e-5
    )
    A, X, y, test, rare = _minority_graph(graph)
    weights = np.where(rare == 2, 60.0, 1.0)
    clf = VQGNNClassifier(**{**FAST, "max_epochs": 40}).fit(A, X, rare, sample_weight=weights)
    assert recall_score(y[test], clf.transduction_[test], average=None)[2] > 0.5


def test_sample_weight_of_a_view_is_one_per_node_of_the_view(graph):
    A, X, y, split, _ = graph
    nodes = Graph(A, X).nodes(split.train_idx)
    clf = VQGNNClassifier(**FAST).fit(nodes, y[split.train_idx], sample_weight=np.ones(len(nodes)))
    assert clf.score(Graph(A, X).nodes(split.test_idx), y[split.test_idx]) > 0.8


def test_a_graph_smaller_than_a_batch_fills_its_codebooks(graph):
    """Full-graph training (batch >= n) still leaves real codewords, so VQ inference on a
    larger graph quantises with them: it agrees with exact inference there."""
    A, X, y, split, labels = graph
    small = np.arange(200)
    clf = VQGNNClassifier(**{**FAST, "batch_size": 512, "max_epochs": 40})
    clf.fit(A[small][:, small], X[small], labels[small])
    words = clf.model_.codebooks[0].codewords
    assert float(words.norm()) > 0 and len(clf.tables_) == 1
    assert clf.tables_[0].codes.shape[0] == 200
    vq = clf.predict(A, X)
    exact = clf.set_params(inference="exact").predict(A, X)
    test = split.test_mask
    assert np.mean(vq[test] == y[test]) >= np.mean(exact[test] == y[test]) - 0.03
    assert np.mean(vq == exact) > 0.9


def test_a_diverging_fit_warns(graph):
    A, X, _, _, labels = graph
    with pytest.warns(ConvergenceWarning, match="training diverged: the loss rose") as seen:
        VQGNNClassifier(**{**FAST, "learning_rate": 1e6}).fit(A, X, labels)
    assert seen[0].filename == __file__  # the warning points at the call of fit


def test_a_converging_fit_does_not_warn(graph):
    A, X, _, _, labels = graph
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        VQGNNClassifier(**FAST).fit(A, X, labels)


def test_warm_start_takes_the_new_settings_that_keep_the_network(graph):
    A, X, _, _, labels = graph
    clf = VQGNNClassifier(warm_start=True, **FAST).fit(A, X, labels)
    network = clf.model_
    clf.set_params(dropout=0.1, attention_dropout=0.2, ema_decay=0.9, grad_scale=0.5)
    clf.fit(A, X, labels)
    assert clf.model_ is network  # continued, not rebuilt
    assert (network.dropout, network.attention_dropout) == (0.1, 0.2)
    assert all(cb.decay == 0.9 and cb.grad_scale == 0.5 for cb in network.codebooks)
    assert len(clf.history_) == 2 * FAST["max_epochs"]


def test_devices_by_index_and_torch_device(graph):
    A, X, _, _, labels = graph
    clf = VQGNNClassifier(**{**FAST, "max_epochs": 1, "device": torch.device("cpu")})
    assert clf.fit(A, X, labels).predict(A, X).shape == (len(labels),)


def test_embeddings_are_what_the_output_layer_aggregates(graph, reference):
    """``embed`` gives the last hidden layer's output: GCN's output layer applied to it gives
    the logits exactly (exact inference); the VQ embeddings of the training graph are close to
    the exact ones; and they carry more of the labels than the raw features."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    from skvqgnn.graph import gcn_norm

    A, X, y, split, _ = graph
    exact = reference.set_params(inference="exact").embed(A, X)
    logits = reference.decision_function(A, X)
    vq = reference.set_params(inference="vq").embed(A, X)
    assert exact.shape == (len(y), FAST["hidden_layer_sizes"][-1]) and (exact >= 0).all()
    out = reference.model_.layers[-1].linears[0]
    C = gcn_norm(sp.csr_array(A, dtype=np.float32))
    expected = (C @ exact) @ out.weight.detach().numpy().T + out.bias.detach().numpy()
    np.testing.assert_allclose(expected, logits, rtol=1e-4, atol=1e-4)
    assert np.linalg.norm(vq - exact) < 0.2 * np.linalg.norm(exact)
    train, test = split.train_mask, split.test_mask
    on_z = LogisticRegression(max_iter=1000).fit(vq[train], y[train]).score(vq[test], y[test])
    on_x = LogisticRegression(max_iter=1000).fit(X[train], y[train]).score(X[test], y[test])
    assert on_z > on_x + 0.05
    nodes = Graph(A, X).nodes([3, 1])
    np.testing.assert_allclose(reference.embed(nodes), vq[[3, 1]], atol=1e-5)


def test_predict_log_proba_is_the_log_of_predict_proba(graph, reference):
    A, X, _, _, _ = graph
    log_p = reference.predict_log_proba(A, X)
    np.testing.assert_allclose(np.exp(log_p), reference.predict_proba(A, X), atol=1e-6)
    assert np.isfinite(log_p).all()


def test_fit_on_a_pyg_data(graph, reference):
    """``fit(data, y)`` with a PyTorch Geometric ``Data``: the same fit as on ``(A, X)``."""
    import scipy.sparse as sp
    from torch_geometric.data import Data

    A, X, _, _, labels = graph
    coo = sp.coo_array(A)
    data = Data(x=torch.from_numpy(X), edge_index=torch.from_numpy(np.stack([coo.col, coo.row])))
    clf = VQGNNClassifier(**FAST).fit(data, labels)
    np.testing.assert_array_equal(clf.transduction_, reference.transduction_)
    np.testing.assert_array_equal(clf.predict(data), reference.transduction_)


def test_a_directed_networkx_edge_sends_from_its_source():
    import networkx as nx

    G = nx.DiGraph([(0, 1), (1, 2)])
    A = Graph(G, np.eye(3)).A.toarray()
    np.testing.assert_array_equal(A, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])  # row = receiver


def test_verbose_reports_the_set_up_stages_before_the_epochs(graph, capsys):
    A, X, _, _, labels = graph
    VQGNNClassifier(**{**FAST, "max_epochs": 2, "verbose": 1}).fit(A, X, labels)
    err = capsys.readouterr().err
    stages = [err.find(s) for s in ("set-up: graph structures", "METIS partition", "k-means of")]
    assert -1 not in stages and stages == sorted(stages)
    assert stages[-1] < err.find("epoch")


def test_own_validation_nodes_and_the_best_score(graph):
    A, X, y, split, _ = graph
    known = np.where(split.train_mask | split.val_mask, y, -1)
    clf = VQGNNClassifier(**{**FAST, "early_stopping": True, "n_iter_no_change": 50})
    clf.fit(A, X, known, validation_nodes=split.val_mask)
    scores = [r["val_score"] for r in clf.history_]
    assert len(scores) == FAST["max_epochs"] and clf.best_validation_score_ == max(scores)
    # the best epoch's model is kept: its accuracy on the validation nodes is the best score
    val = split.val_mask
    assert clf.score(A, X, np.where(val, y, -1)) >= clf.best_validation_score_ - 0.02
    # without early stopping the given nodes are scored, left out of the loss, and not kept
    plain = VQGNNClassifier(**FAST).fit(A, X, known, validation_nodes=np.flatnonzero(val))
    assert plain.best_validation_score_ == max(r["val_score"] for r in plain.history_)
    assert VQGNNClassifier(**FAST).fit(A, X, known).best_validation_score_ is None


def test_the_validation_draw_is_stratified(graph):
    """140 labels in 7 classes of 20, validation_fraction 0.1: 2 of each class."""
    A, X, _, _, _ = graph
    y = np.full(A.shape[0], -1)
    y[:140] = np.arange(140) % 7
    seen = []

    class Record(Callback):
        def on_fit_start(self, fit):
            seen.append(fit.val_nodes)

    clf = VQGNNClassifier(**{**FAST, "max_epochs": 1, "early_stopping": True})
    clf.fit(A, X, y, callbacks=[Record()])
    assert np.bincount(y[seen[0]], minlength=7).tolist() == [2] * 7
