"""skvqgnn/persistence.py: the version stamp of pickles and the weights-only format."""

import pickle
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError

import skvqgnn
from skvqgnn import Graph, VQGNNClassifier, VQGNNLinkPredictor
from skvqgnn._version import PICKLE_VERSION_KEY
from skvqgnn.layers import GCN
from skvqgnn.persistence import InconsistentVersionWarning, load, save

from .conftest import random_graph

FAST = dict(max_epochs=2, batch_size=50, n_codewords=8, hidden_layer_sizes=(8,), random_state=0)


def _graph(seed: int, n: int = 200, f: int = 8):
    rng = np.random.default_rng(seed)
    return random_graph(n, 5, seed=seed), rng.normal(size=(n, f)).astype(np.float32)


@pytest.fixture(scope="module")
def graphs():
    """(A, X, y) to train on, with a third of the nodes labelled, and an unseen graph (A2, X2)."""
    A, X = _graph(0)
    A2, X2 = _graph(1, n=150)
    rng = np.random.default_rng(0)
    y = np.where(rng.random(len(X)) < 1 / 3, rng.integers(0, 3, len(X)), -1)
    return A, X, y, A2, X2


@pytest.fixture(scope="module")
def fit_classifier(graphs):
    """Backbone name -> a classifier fitted on ``graphs``, fitted once per module."""
    A, X, y, _, _ = graphs
    fitted = {}

    def fit(backbone: str) -> VQGNNClassifier:
        if backbone not in fitted:
            fitted[backbone] = VQGNNClassifier(backbone, **FAST).fit(A, X, y)
        return fitted[backbone]

    return fit


@pytest.fixture(scope="module")
def clf(fit_classifier):
    return fit_classifier("gcn")


def _fitted(est) -> set[str]:
    return {k for k in vars(est) if k.endswith("_")}


def _same_outputs(a, b, *inputs, methods=("decision_function", "predict_proba", "predict")):
    for method in methods:
        np.testing.assert_array_equal(getattr(a, method)(*inputs), getattr(b, method)(*inputs))


# -- pickles -------------------------------------------------------------------------------------
def test_pickle_carries_the_version_and_reloads_silently(clf):
    state = clf.__getstate__()
    assert state[PICKLE_VERSION_KEY] == skvqgnn.__version__
    assert PICKLE_VERSION_KEY not in vars(clf)  # stamped on the copy only
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        loaded = pickle.loads(pickle.dumps(clf))
    assert PICKLE_VERSION_KEY not in vars(loaded)
    assert sorted(vars(loaded)) == sorted(vars(clf))


def test_pickle_from_another_version_warns(clf, monkeypatch):
    blob = pickle.dumps(clf)
    saved = skvqgnn.__version__
    monkeypatch.setattr(skvqgnn._version, "__version__", "99.0")
    with pytest.warns(InconsistentVersionWarning) as record:
        loaded = pickle.loads(blob)
    (w,) = [r.message for r in record if isinstance(r.message, InconsistentVersionWarning)]
    assert (w.original_version, w.current_version) == (saved, "99.0")
    assert f"skvqgnn {saved} " in str(w) and "99.0" in str(w) and "weights-only" in str(w)
    assert "refit" in str(w).lower()
    assert loaded.n_iter_ == clf.n_iter_  # the warning does not stop the load


def test_pickle_without_a_version_warns(clf):
    state = {k: v for k, v in clf.__getstate__().items() if k != PICKLE_VERSION_KEY}
    fresh = VQGNNClassifier.__new__(VQGNNClassifier)
    with pytest.warns(InconsistentVersionWarning, match="did not record") as record:
        fresh.__setstate__(state)
    assert record[0].message.original_version is None
    assert fresh.graph_fingerprint_ == clf.graph_fingerprint_


# -- weights-only format -------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["gcn", "gat", "transformer"])
def test_classifier_round_trip_predicts_identically(backbone, fit_classifier, graphs, tmp_path):
    A, X, _, A2, X2 = graphs
    clf = fit_classifier(backbone)
    path = tmp_path / "clf.pt"
    save(clf, path)
    rng_before = torch.random.get_rng_state()
    loaded = load(path)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # rebuilding drew no numbers
    assert type(loaded) is VQGNNClassifier
    assert loaded.get_params() == clf.get_params()
    assert _fitted(loaded) == _fitted(clf)
    assert loaded.history_ == clf.history_
    for a, b in zip(loaded.tables_, clf.tables_, strict=True):
        assert a.codes.dtype == b.codes.dtype
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.usage, b.usage)
    # the training graph, recognised by its fingerprint with fresh objects: the stored tables
    _same_outputs(loaded, clf, A.copy(), X.copy())
    np.testing.assert_array_equal(loaded.transduction_, clf.transduction_)
    # an unseen graph: codes assigned afresh from the loaded codebooks
    _same_outputs(loaded, clf, A2, X2, methods=["decision_function"])
    # a loaded model saves again, to the same content
    save(loaded, tmp_path / "again.pt")
    _same_outputs(load(tmp_path / "again.pt"), clf, A2, X2, methods=["decision_function"])


def test_link_predictor_round_trip_predicts_identically(graphs, tmp_path):
    A, X, _, A2, X2 = graphs
    graph = Graph(A, X)
    coo = sp.triu(A, 1).tocoo()
    positives = np.stack([coo.row, coo.col], 1)[:150]
    rng = np.random.default_rng(0)
    negatives = rng.integers(0, len(X), size=(50, 2))
    pairs = np.concatenate([positives, negatives])
    t = np.r_[np.ones(len(positives)), np.zeros(len(negatives))].astype(int)
    lp = VQGNNLinkPredictor(embedding_dim=8, **FAST).fit(graph.pairs(pairs), t)
    assert sp.issparse(lp.message_passing_adjacency_) and lp.head_ is not None
    save(lp, tmp_path / "lp.pt")
    loaded = load(tmp_path / "lp.pt")
    stored = loaded.message_passing_adjacency_
    assert type(stored) is type(lp.message_passing_adjacency_)
    assert (stored != lp.message_passing_adjacency_).nnz == 0
    for name, value in lp.head_.state_dict().items():
        assert torch.equal(loaded.head_.state_dict()[name], value)
    # a PairSet of the training graph passes messages over the stored training positives
    _same_outputs(loaded, lp, Graph(A.copy(), X.copy()).pairs(pairs))
    P2 = np.random.default_rng(1).integers(0, len(X2), size=(40, 2))
    _same_outputs(loaded, lp, A2, X2, P2)
    np.testing.assert_array_equal(loaded.embed(A2, X2), lp.embed(A2, X2))


@pytest.mark.parametrize("dtype", ["<U5", object])
def test_string_labels_and_added_attributes_round_trip(clf, dtype, tmp_path, graphs):
    """Any numpy, scalar or container attribute ending in ``_`` is stored, without pickle."""
    A, X, _, _, _ = graphs
    labelled = pickle.loads(pickle.dumps(clf))
    labelled.classes_ = np.array(["ant", "bee", "cat"], dtype=dtype)
    labelled.transduction_ = labelled.classes_[np.searchsorted(clf.classes_, clf.transduction_)]
    labelled.label_matrix_ = np.arange(6, dtype=np.uint16).reshape(2, 3)
    labelled.threshold_ = np.float32(0.25)
    labelled.scores_ = {"folds": (1, 2), 3: [np.float64(0.5), None, "x"]}
    save(labelled, tmp_path / "m.pt")
    loaded = load(tmp_path / "m.pt")
    for name in ("classes_", "transduction_", "label_matrix_"):
        got, want = getattr(loaded, name), getattr(labelled, name)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert type(loaded.threshold_) is np.float32 and loaded.threshold_ == np.float32(0.25)
    assert loaded.scores_ == {"folds": (1, 2), 3: [0.5, None, "x"]}
    assert type(loaded.scores_[3][0]) is np.float64
    np.testing.assert_array_equal(loaded.predict(A, X), labelled.predict(A, X))
    assert set(loaded.predict(A, X)) <= {"ant", "bee", "cat"}


def test_random_state_and_device_parameters_round_trip(clf, tmp_path):
    est = pickle.loads(pickle.dumps(clf))
    est.set_params(random_state=np.random.RandomState(3), device=torch.device("cpu"))
    save(est, tmp_path / "m.pt")
    params = load(tmp_path / "m.pt").get_params()
    assert params["device"] == torch.device("cpu")
    assert params["random_state"].randint(1000, size=5).tolist() == (
        np.random.RandomState(3).randint(1000, size=5).tolist()
    )
    assert params["hidden_layer_sizes"] == clf.hidden_layer_sizes  # a tuple stays a tuple


def test_an_attribute_of_unknown_type_is_refused_by_name(clf, tmp_path):
    odd = pickle.loads(pickle.dumps(clf))
    odd.callback_ = print
    with pytest.raises(TypeError, match="callback_"):
        save(odd, tmp_path / "m.pt")


class _Trap:
    """Records that unpickling it ran code."""

    sprung = False

    def __reduce__(self):
        return (_spring, ())


def _spring():
    _Trap.sprung = True
    return "sprung"


def test_load_refuses_a_file_with_a_pickled_object(clf, tmp_path):
    path = tmp_path / "m.pt"
    save(clf, path)
    blob = torch.load(path, weights_only=True)
    blob["attributes"]["extra_"] = _Trap()
    torch.save(blob, path)
    with pytest.raises(ValueError, match="is not a skvqgnn weights file") as exc:
        load(path)
    assert isinstance(exc.value.__cause__, pickle.UnpicklingError)
    assert not _Trap.sprung
    torch.load(path, weights_only=False)  # the file really holds code that runs when unpickled
    assert _Trap.sprung


def test_user_backbone_is_refused_by_name(graphs, tmp_path):
    class MyGCN(GCN):
        name = "mine"

    A, X, y, _, _ = graphs
    clf = VQGNNClassifier(MyGCN(), **{**FAST, "max_epochs": 1}).fit(A, X, y)
    with pytest.raises(ValueError, match="backbone") as info:
        save(clf, tmp_path / "m.pt")
    assert "joblib" in str(info.value) and "runs code" in str(info.value)
    assert not (tmp_path / "m.pt").exists()


def test_unfitted_estimator_is_refused(tmp_path):
    for est in (VQGNNClassifier(), VQGNNLinkPredictor()):
        with pytest.raises(NotFittedError):
            save(est, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


def test_unknown_estimator_name_is_refused(clf, tmp_path):
    path = tmp_path / "m.pt"
    save(clf, path)
    blob = torch.load(path, weights_only=True)
    blob["estimator"] = "Pipeline"
    torch.save(blob, path)
    with pytest.raises(ValueError, match="Pipeline"):
        load(path)
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a skvqgnn weights file"):
        load(path)


def test_subclass_is_refused(clf, tmp_path):
    class Mine(VQGNNClassifier):
        pass

    with pytest.raises(ValueError, match="Mine"):
        save(Mine(), tmp_path / "m.pt")


def test_load_from_another_version_warns(clf, tmp_path, monkeypatch, graphs):
    A, X, _, _, _ = graphs
    path = tmp_path / "m.pt"
    save(clf, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InconsistentVersionWarning)
        load(path)
    saved = skvqgnn.__version__
    monkeypatch.setattr(skvqgnn._version, "__version__", "99.0")
    with pytest.warns(InconsistentVersionWarning, match=re.escape(f"{saved} and is loaded with")):
        loaded = load(path)
    with pytest.warns(InconsistentVersionWarning) as record:
        load(path)
    assert all(r.message.weights_only for r in record)
    np.testing.assert_array_equal(loaded.predict(A, X), clf.predict(A, X))


def test_load_of_a_joblib_file_says_what_the_file_is(clf, tmp_path):
    import joblib

    joblib.dump(clf, tmp_path / "m.joblib")
    with pytest.raises(ValueError, match=r"it is a pickle \(joblib.dump or pickle.dump\); read"):
        load(tmp_path / "m.joblib")
