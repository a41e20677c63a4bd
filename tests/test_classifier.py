"""VQGNNClassifier on the scikit-learn contract: usages of DESIGN §6, liveness, persistence."""

import io
import pickle
from contextlib import redirect_stderr
from types import SimpleNamespace

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_predict, cross_val_score
from sklearn.utils._param_validation import InvalidParameterError

from skvqgnn import Callback, Graph, NodeSet, VQGNNClassifier, inference, samplers
from skvqgnn.convolutions import GraphData
from skvqgnn.datasets import load_cora
from skvqgnn.layers import make_backbone
from skvqgnn.sketch import resolve_backend

FAST = dict(
    max_epochs=15, batch_size=100, n_codewords=32, hidden_layer_sizes=(16,), learning_rate=0.01
)


def _labels(y, split):
    return np.where(split.train_mask, y, -1)


def _acc(pred, y, mask):
    return float((pred[mask] == y[mask]).mean())


def test_fit_predict_on_a_graph(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, **FAST).fit(A, X, _labels(y, split))
    assert clf.classes_.tolist() == [0, 1, 2]
    assert clf.n_features_in_ == X.shape[1]
    pred = clf.predict(A, X)
    assert pred.shape == (600,)
    np.testing.assert_array_equal(pred, clf.transduction_)
    proba = clf.predict_proba(A, X)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], pred)
    assert _acc(pred, y, split.test_mask) > 0.8
    assert len(clf.history_) == clf.n_iter_ == 15
    assert clf.vq_error_.shape == (1,) and 0 < clf.vq_error_[0] < 1


@pytest.mark.parametrize("n_classes, dtype", [(3, torch.int8), (200, torch.int16)])
def test_a_fit_holds_its_targets_in_the_smallest_integers(csbm, n_classes, dtype):
    # every node's target is held for the fit (a partitioned process holds every node's):
    # int8 below 128 classes, not int64, and the loss reads them as class indices
    A, X, y, split = csbm
    labels = _labels(y, split) * (n_classes // 3)  # codes 0, k, 2k: n_classes classes apart
    seen = {}

    class Targets(Callback):
        def on_epoch_end(self, fit, record):
            seen["dtype"], seen["loss"] = fit.task.targets.dtype, record["loss"]

    classes = np.arange(n_classes)
    clf = VQGNNClassifier(random_state=0, **{**FAST, "max_epochs": 2})
    if n_classes > 3:  # the classes the encoder sees: every code 0 .. n_classes - 1
        labels = np.where(labels >= 0, labels % n_classes, -1)
        labels[np.flatnonzero(labels < 0)[:n_classes]] = classes
    clf.fit(A, X, labels, callbacks=[Targets()])
    assert len(clf.classes_) == (3 if n_classes == 3 else n_classes)
    assert seen["dtype"] == dtype and np.isfinite(seen["loss"])


def test_labels_are_the_most_probable_class_block_by_block(csbm, monkeypatch):
    """``predict`` and ``transduction_`` turn logits into labels a block of rows at a time
    (here 7 rows, the last block shorter): every node gets its own row's most probable class,
    in the user's label values."""
    import skvqgnn.classifier

    monkeypatch.setattr(skvqgnn.classifier, "_LABEL_ROWS", 7)
    A, X, y, split = csbm
    names = np.array(["ant", "bee", "cat"], dtype=object)
    labels = np.where(split.train_mask, names[y], None)
    clf = VQGNNClassifier(random_state=0, **{**FAST, "max_epochs": 2}).fit(A, X, labels)
    expected = clf.classes_[clf.predict_proba(A, X).argmax(1)]
    assert len(expected) % 7 and len(set(expected)) > 1
    assert np.array_equal(clf.predict(A, X), expected)
    assert np.array_equal(clf.transduction_, expected)


def test_cora_public_split_accuracy_floor():
    A, X, y, split = load_cora()
    clf = VQGNNClassifier(batch_size=512, max_epochs=30, learning_rate=0.01, random_state=0)
    clf.fit(A, X, _labels(y, split))
    assert _acc(clf.transduction_, y, split.test_mask) >= 0.76


_GRADIENT_STATE = ("grad_counts", "grad_feature_sums", "grad_sums", "grad_var", "trust_den")


class _WatchSteps(Callback):
    """Record, around every training step of a fit, each level's codebook state and
    assignments before and after, and whether the step had a backward pass."""

    def __init__(self):
        self.steps = []

    @staticmethod
    def _state(fit):
        return [
            (
                {k: v.clone() for k, v in cb.state_dict().items()},
                t.codes.copy(),
                t.grad_codes.copy(),
            )
            for cb, t in zip(fit.model.codebooks, fit.tables, strict=True)
        ]

    def on_step_start(self, fit, batch_nodes):
        self.before = self._state(fit)

    def on_step_end(self, fit, batch_nodes, n_terms):
        self.steps.append((n_terms > 0, batch_nodes.copy(), self.before, self._state(fit)))


def test_liveness_every_step_moves_codewords_counts_gradient_codewords_and_codes(csbm):
    """DESIGN §3.1/§8, per step and at every level: feature codewords, counts, gradient
    codewords and both assignments of the batch nodes change in every training step."""
    A, X, y, split = csbm
    watch = _WatchSteps()
    params = {**FAST, "max_epochs": 2, "hidden_layer_sizes": (16, 16), "sampler": "random"}
    clf = VQGNNClassifier(random_state=0, **params).fit(A, X, _labels(y, split), callbacks=[watch])
    steps = watch.steps
    assert len(steps) == 2 * 6 and all(backward for backward, *_ in steps)
    for _, nodes, before, after in steps:
        for (s0, codes0, grad0), (s1, codes1, grad1) in zip(before, after, strict=True):
            for key in ("counts", "feature_sums", "grad_counts", "grad_sums"):
                assert not torch.equal(s0[key], s1[key]), key
            assert (codes0[nodes] != codes1[nodes]).any()
            assert (grad0[nodes] != grad1[nodes]).any()
            outside = np.setdiff1d(np.arange(len(codes0)), nodes)
            np.testing.assert_array_equal(codes0[outside], codes1[outside])
    for record in clf.history_:
        assert all(v > 0 for v in record["blue_message_norm"])
        assert all(0 < t <= 1 for level in record["grad_trust"] for t in level)


def test_batches_without_a_loss_never_enter_a_gradient_codeword(csbm):
    """A step without a labelled node has no backward pass: its gradients are unknown, not
    zero, so no level's gradient codebook (codewords, counts, moments, trust) changes; its
    feature codebooks still do."""
    A, X, y, split = csbm
    labels = np.full(len(y), -1)
    labels[:12] = y[:12]  # 12 labelled nodes: most batches of 20 have none
    watch = _WatchSteps()
    params = {**FAST, "max_epochs": 1, "hidden_layer_sizes": (16, 16), "batch_size": 20}
    VQGNNClassifier(random_state=0, sampler="random", **params).fit(A, X, labels, callbacks=[watch])
    steps = watch.steps
    with_loss = [backward for backward, *_ in steps]
    assert 0 < sum(with_loss) < len(steps)
    for backward, _, before, after in steps:
        for (s0, *_), (s1, *_) in zip(before, after, strict=True):
            assert not torch.equal(s0["feature_sums"], s1["feature_sums"])
            moved = {k: not torch.equal(s0[k], s1[k]) for k in _GRADIENT_STATE}
            if backward:  # (moments need two rows with a known gradient)
                assert moved["grad_counts"] and moved["grad_sums"] and moved["grad_feature_sums"]
            else:
                assert not any(moved.values())


def test_no_backward_messages_option(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, backward_messages="none", **{**FAST, "max_epochs": 2})
    clf.fit(A, X, _labels(y, split))
    assert all(r["blue_message_norm"][0] == 0 for r in clf.history_)


def test_full_graph_mode_is_exact_and_has_no_codebooks(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, **{**FAST, "batch_size": None}).fit(
        A, X, _labels(y, split)
    )
    assert clf.vq_error_.shape == (0,)
    assert "vq_error" not in clf.history_[0]
    exact = clf.set_params(inference="exact").predict_proba(A, X)
    np.testing.assert_allclose(exact, clf.set_params(inference="vq").predict_proba(A, X), atol=1e-6)


def test_vq_and_exact_inference_agree(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, **FAST).fit(A, X, _labels(y, split))
    vq = clf.predict(A, X)
    exact = clf.set_params(inference="exact").predict(A, X)
    assert (vq == exact).mean() > 0.9


@pytest.fixture
def two_threads():
    """torch on two threads for the test (its default on a 2-core machine), whatever an
    earlier test set."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("two_threads")
@pytest.mark.parametrize("backbone", ["gcn", "gat", "transformer"])
def test_bit_reproducible_on_several_threads(csbm, backbone):
    """Same random_state, same fit, also when torch runs on several threads: no operation
    whose backward sums repeated rows in thread order (advanced indexing) is on the path."""
    from skvqgnn import VQGNNLinkPredictor

    A, X, y, split = csbm
    params = dict(backbone=backbone, random_state=3, max_epochs=3, batch_size=100, n_codewords=16)
    fits = [VQGNNClassifier(**params).fit(A, X, y).predict_proba(A, X) for _ in range(2)]
    np.testing.assert_array_equal(*fits)
    links = [VQGNNLinkPredictor(**params).fit(A, X).embed(A, X) for _ in range(2)]
    np.testing.assert_array_equal(*links)


@pytest.mark.parametrize("sampler", ["cluster", "random"])
def test_bit_reproducible_with_random_state(csbm, sampler):
    A, X, y, split = csbm
    params = dict(random_state=3, sampler=sampler, **{**FAST, "max_epochs": 4})
    p1 = VQGNNClassifier(**params).fit(A, X, _labels(y, split))
    p2 = VQGNNClassifier(**params).fit(A, X, _labels(y, split))
    assert [r["loss"] for r in p1.history_] == [r["loss"] for r in p2.history_]
    np.testing.assert_array_equal(p1.predict_proba(A, X), p2.predict_proba(A, X))
    p3 = VQGNNClassifier(**{**params, "random_state": 4}).fit(A, X, _labels(y, split))
    assert [r["loss"] for r in p1.history_] != [r["loss"] for r in p3.history_]


def test_nodeset_fit_predict_score(csbm):
    A, X, y, split = csbm
    G = Graph(A, X)
    train = split.train_idx
    clf = VQGNNClassifier(random_state=0, **FAST).fit(G.nodes(train), y[train])
    test = G.nodes(split.test_idx)
    pred = clf.predict(test)
    assert pred.shape == (len(split.test_idx),)
    assert clf.score(test, y[split.test_idx]) == pytest.approx(_acc(pred, y[split.test_idx], ...))
    assert clf.score(test, y[split.test_idx]) > 0.8
    # predictions for a view equal those rows of the whole-graph predictions
    np.testing.assert_array_equal(pred, clf.predict(A, X)[split.test_idx])
    # a Graph scores every node, like (A, X)
    assert clf.score(G, y) == pytest.approx(clf.score(A, X, y))
    assert clf.score(G, y) == pytest.approx(_acc(clf.predict(A, X), y, ...))


def test_cross_validation_and_grid_search_over_nodes(csbm):
    A, X, y, split = csbm
    G = Graph(A, X)
    idx = np.flatnonzero(split.train_mask | split.val_mask)
    nodes = G.nodes(idx)
    clf = VQGNNClassifier(random_state=0, **{**FAST, "max_epochs": 8})
    scores = cross_val_score(clf, nodes, y[idx], cv=3)
    assert scores.shape == (3,) and scores.min() > 0.7
    pred = cross_val_predict(clf, nodes, y[idx], cv=3)
    assert pred.shape == (len(idx),) and (pred == y[idx]).mean() > 0.7
    search = GridSearchCV(clf, {"n_codewords": [8, 32]}, cv=3, n_jobs=2).fit(nodes, y[idx])
    assert set(search.cv_results_["param_n_codewords"]) == {8, 32}
    assert search.best_estimator_.score(G.nodes(split.test_idx), y[split.test_idx]) > 0.75
    assert isinstance(nodes[(np.arange(3), Ellipsis)], NodeSet)


def test_joblib_round_trip_gives_identical_predictions(csbm, tmp_path):
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, **FAST).fit(A, X, _labels(y, split))
    before = clf.predict_proba(A, X)
    path = tmp_path / "m.joblib"
    joblib.dump(clf, path)
    loaded = joblib.load(path)
    # the reloaded model recognises its training graph by content, with fresh objects
    assert loaded.graph_fingerprint_ == Graph(A.copy(), X.copy()).fingerprint
    np.testing.assert_array_equal(loaded.predict_proba(A.copy(), X.copy()), before)
    np.testing.assert_array_equal(loaded.transduction_, clf.transduction_)


def test_training_graph_is_not_pickled():
    rng = np.random.default_rng(0)
    n = 400
    from .conftest import random_graph

    A = random_graph(n, 4, seed=0)
    X = rng.normal(size=(n, 500)).astype(np.float32)  # 800 kB of features
    y = rng.integers(0, 2, n)
    clf = VQGNNClassifier(random_state=0, max_epochs=1, batch_size=100, n_codewords=8)
    clf.fit(A, X, y)
    assert len(pickle.dumps(clf)) < X.nbytes / 2


def test_model_is_kept_on_cpu_and_loads_without_cuda(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, device="cpu", **{**FAST, "max_epochs": 1})
    clf.fit(A, X, _labels(y, split))
    assert all(p.device.type == "cpu" for p in clf.model_.parameters())
    assert all(b.device.type == "cpu" for b in clf.model_.buffers())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_predicts_on_cpu(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, device="cuda", **FAST).fit(A, X, _labels(y, split))
    blob = pickle.dumps(clf)
    loaded = pickle.loads(blob)
    loaded.set_params(device="cpu")
    assert (loaded.predict(A, X) == clf.predict(A, X)).mean() > 0.99


@pytest.mark.skipif(resolve_backend("auto") != "torch_sparse", reason="torch-sparse not installed")
def test_torch_sparse_backend_matches_torch(csbm):
    A, X, y, split = csbm
    p = {"random_state": 0, **FAST, "max_epochs": 3}
    a = VQGNNClassifier(sparse_backend="torch", **p).fit(A, X, _labels(y, split))
    b = VQGNNClassifier(sparse_backend="torch_sparse", **p).fit(A, X, _labels(y, split))
    np.testing.assert_allclose(a.predict_proba(A, X), b.predict_proba(A, X), atol=1e-4)


def test_early_stopping_keeps_the_best_epoch(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(
        random_state=0, early_stopping=True, n_iter_no_change=3, **{**FAST, "max_epochs": 60}
    ).fit(A, X, _labels(y, split))
    scores = [r["val_score"] for r in clf.history_]
    assert clf.n_iter_ < 60
    assert np.argmax(scores) == len(scores) - 4  # stopped 3 epochs after the best
    # a fresh validation draw on every fit: different random_state, different held-out nodes
    assert all("val_score" in r for r in clf.history_)


def test_verbose_shows_a_progress_bar(csbm):
    A, X, y, split = csbm
    err = io.StringIO()
    with redirect_stderr(err):
        VQGNNClassifier(random_state=0, verbose=1, **{**FAST, "max_epochs": 2}).fit(
            A, X, _labels(y, split)
        )
    assert "epoch" in err.getvalue() and "2/2" in err.getvalue()


def test_clone_and_params_are_stored_as_given():
    clf = VQGNNClassifier("sage", hidden_layer_sizes=[8, 8], n_codewords=7)
    assert clf.get_params()["hidden_layer_sizes"] == [8, 8]
    assert clone(clf).get_params() == clf.get_params()


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"backbone": "gat2"}, InvalidParameterError, "backbone"),
        ({"batch_size": 0}, InvalidParameterError, "batch_size"),
        ({"n_codewords": 0}, InvalidParameterError, "n_codewords"),
        ({"hidden_layer_sizes": (4, 0)}, ValueError, "hidden_layer_sizes"),
        ({"backbone": object()}, InvalidParameterError, "backbone"),
        ({"heads": 0}, InvalidParameterError, "heads"),
        ({"backbone": "gat", "hidden_layer_sizes": (10,), "heads": 3}, ValueError, "heads"),
        ({"backbone": "transformer", "codeword_dim": 4}, ValueError, "codeword_dim"),
        ({"codeword_dim": "whole"}, InvalidParameterError, "codeword_dim"),
        ({"backbone": "gat", "attention_dropout": 1.0}, InvalidParameterError, "attention_dropout"),
    ],
)
def test_bad_parameters_are_named(csbm, params, error, match):
    A, X, y, split = csbm
    with pytest.raises(error, match=match):
        VQGNNClassifier(**params).fit(A, X, _labels(y, split))


def test_bad_labels_and_inputs(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(**FAST)
    with pytest.raises(ValueError, match="no labelled node"):
        clf.fit(A, X, np.full(600, -1))
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.fit(A, X, np.where(split.train_mask, 0, -1))
    with pytest.raises(ValueError, match="y has 10 entries"):
        clf.fit(A, X, y[:10])
    with pytest.raises(ValueError, match="integer class labels"):
        clf.fit(A, X, y + 0.5)
    fitted = VQGNNClassifier(random_state=0, **{**FAST, "max_epochs": 1}).fit(A, X, y)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(A, X[:, :5])
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        VQGNNClassifier().predict(A, X)


@pytest.mark.parametrize("backbone", ["gcn", "gat"])
def test_sparse_and_dense_features_give_the_same_network_output(csbm, backbone):
    import scipy.sparse as sp

    A, X, y, split = csbm
    X = np.where(np.abs(X) > 4.0, X, 0.0)  # mostly zeros
    clf = VQGNNClassifier(backbone, random_state=0, inference="exact", **{**FAST, "max_epochs": 2})
    if backbone == "gcn":  # the sparse path of the first layer's inputs
        data = GraphData(Graph(A, sp.csr_array(X)), make_backbone("gcn"))
        rows = data.convolutions[0].inputs_of(np.arange(50), torch.device("cpu"))
        assert rows.layout == torch.sparse_csr
    clf.fit(A, sp.csr_array(X), _labels(y, split))
    np.testing.assert_allclose(
        clf.predict_proba(A, sp.csr_array(X)), clf.predict_proba(A, X), atol=1e-5
    )


def test_predict_on_an_unseen_graph_assigns_nearest_codewords(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, **FAST).fit(A, X, _labels(y, split))
    codes = clf.tables_[0].codes.copy()
    words = clf.model_.codebooks[0].codewords.clone()
    X_new = X + np.random.default_rng(1).normal(scale=0.1, size=X.shape).astype(np.float32)
    pred = clf.predict(A, X_new)  # another fingerprint: inductive assignment, layer by layer
    assert (pred[split.test_mask] == y[split.test_mask]).mean() > 0.75
    assert (pred == clf.predict(A, X)).mean() > 0.9
    np.testing.assert_array_equal(clf.tables_[0].codes, codes)  # nothing changes at predict time
    assert torch.equal(clf.model_.codebooks[0].codewords, words)


def test_the_training_graph_in_any_storage_is_the_training_graph(csbm, monkeypatch):
    """The same content means the same graph: predictions on it in another storage (dtype,
    format, index width, dense or sparse X, networkx, edge_index, torch tensors, a PyG-like
    Data) use the training assignments and the training partition (never the new-graph path,
    never METIS again, also after pickling), and equal the predictions on the original."""
    import networkx as nx
    import scipy.sparse as sp

    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, **FAST).fit(A, X, _labels(y, split))
    proba = clf.predict_proba(A, X)

    def refuse(*args, **kwargs):
        raise AssertionError("the training graph was taken for a new graph")

    monkeypatch.setattr(inference, "assign_new_graph", refuse)
    monkeypatch.setattr(samplers, "metis_partition", refuse)
    clf = pickle.loads(pickle.dumps(clf))
    wide = sp.csr_array(A)
    wide.indptr, wide.indices = wide.indptr.astype(np.int64), wide.indices.astype(np.int64)
    coo = sp.coo_array(A)
    edge_index = np.stack([coo.col, coo.row])  # column e: an edge source -> target
    round_trip = nx.to_scipy_sparse_array(
        nx.from_scipy_sparse_array(sp.csr_array(A)), nodelist=range(A.shape[0])
    )
    forms = {
        "sparse X": (A, sp.csr_matrix(X)),
        "float64 X": (A, X.astype(np.float64)),
        "int64 indices": (wide, X),
        "dense A": (sp.csr_array(A).toarray(), X),
        "networkx round trip": (round_trip, X),
        "networkx graph": (nx.from_scipy_sparse_array(sp.csr_array(A)), X),
        "edge_index (2, m), source -> target": (edge_index, X),
        "torch edge_index and features": (torch.from_numpy(edge_index), torch.from_numpy(X)),
        "torch sparse adjacency": (
            torch.sparse_coo_tensor(np.stack([coo.row, coo.col]), coo.data, A.shape),
            X,
        ),
        "PyG-like Data (duck-typed)": (
            SimpleNamespace(x=torch.from_numpy(X), edge_index=torch.from_numpy(edge_index)),
            None,
        ),
    }
    for name, (A_, X_) in forms.items():
        np.testing.assert_array_equal(clf.predict(A_, X_), clf.transduction_, err_msg=name)
        np.testing.assert_allclose(clf.predict_proba(A_, X_), proba, atol=1e-5, err_msg=name)


def test_a_new_batch_size_at_predict_time_partitions_again(csbm):
    """The kept training partition is for the fit's batch size; with another one, predictions
    come from a partition of that size (every node predicted, as a fresh estimator would)."""
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, **FAST).fit(A, X, _labels(y, split))
    clf.set_params(batch_size=300)
    proba = clf.predict_proba(A, X)
    assert np.isfinite(proba).all() and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert np.mean(proba.argmax(1) == clf.transduction_) > 0.9


@pytest.mark.parametrize("backbone", ["gat", "gin", "transformer"])
def test_every_backbone_trains_infers_and_persists(csbm, backbone, tmp_path):
    """VQ training, both inference modes and joblib for the learnable and MLP backbones."""
    A, X, y, split = csbm
    params = {**FAST, "max_epochs": 20, "hidden_layer_sizes": (16,)}
    clf = VQGNNClassifier(backbone, random_state=0, **params).fit(A, X, _labels(y, split))
    assert _acc(clf.transduction_, y, split.test_mask) > 0.75
    last = clf.history_[-1]
    assert last["assignments_changed"][0] > 0 and last["codeword_shift"][0] > 0
    # backward messages by default through fixed convolutions only ("auto"): all of gin's,
    # the transformer's GCN part, none of gat's
    blue = backbone in ("gin", "transformer")
    assert (last["grad_codeword_norm"][0] > 0) == blue
    assert (last["blue_message_norm"][0] > 0) == blue
    exact = clf.set_params(inference="exact").predict(A, X)
    vq = clf.set_params(inference="vq").predict(A, X)
    assert np.mean(exact == vq) > 0.9
    joblib.dump(clf, tmp_path / "model.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "model.joblib").predict(A, X), vq)


def test_grid_search_over_a_learnable_backbone(csbm):
    A, X, y, split = csbm
    G = Graph(A, X)
    labelled = np.flatnonzero(split.train_mask | split.val_mask)
    clf = VQGNNClassifier("gat", random_state=0, **{**FAST, "max_epochs": 5})
    search = GridSearchCV(clf, {"n_codewords": [8, 32]}, cv=2).fit(G.nodes(labelled), y[labelled])
    assert search.best_params_["n_codewords"] in (8, 32)
    assert search.predict(G.nodes(np.arange(10))).shape == (10,)


def test_a_user_backbone_instance_fits_clones_and_pickles(csbm):
    from .test_convolutions import CosineBackbone

    A, X, y, split = csbm
    clf = VQGNNClassifier(CosineBackbone(), random_state=0, **{**FAST, "max_epochs": 100})
    assert isinstance(clone(clf).backbone, CosineBackbone)
    clf.fit(A, X, _labels(y, split))
    assert _acc(clf.transduction_, y, split.test_mask) > 0.7
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict(A, X), clf.predict(A, X))


@pytest.fixture(scope="module")
def csbm_600():
    from skvqgnn.datasets import make_csbm

    return make_csbm(
        600, 3, avg_degree=8, homophily=0.85, n_features=16, feature_noise=1.5, random_state=0
    )


@pytest.mark.parametrize("backbone", ["gcn", "sage", "gin", "gat"])
def test_two_hidden_layers_with_random_batches_come_close_to_full_graph(csbm_600, backbone):
    """Two hidden layers, random node batches (7/8 of every node's messages out of batch) and
    a learning rate of 0.01: VQ-GNN must train as full-graph training does, within a few
    points. Before issue 17 (769ee04) this config gave gcn 0.975, sage 0.925, gin 0.333
    (chance), gat 0.617 against full graph 1.0, 1.0, 0.992, 0.983: sage, gin and gat failed."""
    A, X, y, split = csbm_600
    params = dict(
        hidden_layer_sizes=(16, 16),
        learning_rate=0.01,
        max_epochs=100,
        n_codewords=64,
        random_state=0,
        device="cpu",
        **({"heads": 2} if backbone == "gat" else {}),
    )
    full = VQGNNClassifier(backbone, batch_size=None, **params).fit(A, X, _labels(y, split))
    vq = VQGNNClassifier(backbone, batch_size=75, sampler="random", **params)
    vq.fit(A, X, _labels(y, split))
    full_acc = _acc(full.transduction_, y, split.test_mask)
    vq_acc = _acc(vq.transduction_, y, split.test_mask)
    assert full_acc > 0.95
    # measured at seed 0: gcn 0.983, sage 0.992, gin 0.975 (0.8 to 1.7 points behind); gat
    # 0.925, 5.8 behind (seeds 1, 2: +0.9, -2.5), GAT with random batches being the weakest
    # regime in benchmarks/depth.py too
    margin = 0.08 if backbone == "gat" else 0.05
    assert vq_acc >= full_acc - margin, (vq_acc, full_acc)


@pytest.mark.parametrize("partitioner", ["label_propagation", "contiguous"])
def test_other_partitioners_train_without_metis(csbm, monkeypatch, partitioner):
    """``partitioner="label_propagation"`` and ``"contiguous"`` (ranges of the node order;
    ids in random order here, so random parts) train without METIS, in equal parts, to the
    same accuracy; contiguous parts call no partitioner at all."""
    import skvqgnn.samplers

    def banned(*args, **kwargs):
        raise AssertionError("a partitioner that was not asked for was called")

    monkeypatch.setattr(skvqgnn.samplers, "metis_partition", banned)
    if partitioner == "contiguous":
        monkeypatch.setattr(skvqgnn.samplers, "label_propagation_partition", banned)
    A, X, y, split = csbm
    clf = VQGNNClassifier(random_state=0, partitioner=partitioner, **FAST)
    clf.fit(A, X, _labels(y, split))
    sizes = np.bincount(clf.partition_)
    assert len(sizes) == 24 and sizes.max() - sizes.min() <= 1  # 6 batches of 4 parts
    assert _acc(clf.predict(A, X), y, split.test_mask) > 0.8
    if partitioner == "contiguous":
        assert np.all(np.diff(clf.partition_) >= 0)  # ranges of consecutive ids
    with pytest.raises(AssertionError, match="not asked for"):  # the default is METIS
        VQGNNClassifier(random_state=0, **FAST).fit(A, X, _labels(y, split))
