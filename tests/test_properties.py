"""Property-based tests over random small graphs, features, labels and hyper-parameters.

Valid inputs (any scipy sparse format or a dense array, directed or not, self-loops, duplicate
COO entries, isolated nodes, no edges, weights from 1e-30 to 1e6, features of any numeric dtype up
to 1e4 in magnitude) must fit and give finite, well-formed outputs; each kind of invalid input must
raise its documented exception, with a message naming the argument at fault. Inputs that hit a
known float32 overflow are left out of the properties and pinned by the strict xfail tests at the
end of the file.
"""

from __future__ import annotations

import copy
import re
import warnings
from typing import Any, NamedTuple

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.utils._param_validation import InvalidParameterError

from skvqgnn import Graph, VQGNNClassifier, VQGNNLinkPredictor
from skvqgnn.graph import gcn_norm

BACKBONES = ["gcn", "sage", "gin", "gat", "transformer"]
SPARSE_FORMATS = [
    f"{fmt}_{kind}" for kind in ("array", "matrix") for fmt in ("csr", "csc", "coo", "lil")
]
MAX_NODES = 30

# No deadline: the first fit of a process pays for PyTorch's warm-up (about 1 s), and the cost of
# an example varies tenfold with n, batch_size and the backbone.
PROPERTY = settings(deadline=None)

# gin sums weighted messages without normalising them, so edge weights near 1e6 overflow float32
# (test_known_overflow_gin_link_scores_with_large_weights_and_features): its graphs stop at 1e3
MAX_WEIGHT = {"gin": 1e3}


def weights(max_weight: float = 1e6) -> st.SearchStrategy[float]:
    """Non-negative finite edge weights, the extremes (1e-30, ``max_weight``, 0) included."""
    return st.one_of(
        st.sampled_from([1.0, 1e-30, max_weight, 0.0]),
        st.floats(0, max_weight, allow_nan=False, width=32),
    )


FEATURE_VALUES = st.one_of(
    st.sampled_from([0.0, 1.0, -1e4, 1e4]), st.floats(-1e4, 1e4, allow_nan=False, width=32)
)


def _stored(M: sp.coo_array, fmt: str) -> Any:
    """``M`` as a dense array or in the scipy sparse format ``fmt`` (e.g. ``"csc_matrix"``)."""
    if fmt == "dense":
        return M.toarray()
    return getattr(sp, fmt)(M)


def _coo(entries: list[tuple[int, int, float]], shape: tuple[int, int]) -> sp.coo_array:
    """COO with the ``(row, col, weight)`` entries as given: duplicates are kept, not summed."""
    rows, cols, values = (
        (np.asarray(v) for v in zip(*entries, strict=True)) if entries else ([],) * 3
    )
    return sp.coo_array(
        (np.asarray(values, dtype=np.float64), (np.asarray(rows, int), np.asarray(cols, int))),
        shape=shape,
    )


@st.composite
def edge_lists(
    draw: Any, n: int, with_edge: bool = False, max_weight: float = 1e6
) -> list[tuple[int, int, float]]:
    """COO entries of a graph on ``n`` nodes: directed or undirected, self-loops or not,
    duplicates; ``with_edge`` guarantees one unit edge between two distinct nodes."""
    node = st.integers(0, n - 1)
    entries = draw(st.lists(st.tuples(node, node, weights(max_weight)), max_size=3 * n))
    if not draw(st.booleans()):
        entries = [(i, j, w) for i, j, w in entries if i != j]
    if with_edge:
        u, v = draw(st.permutations(range(n)))[:2]
        entries.append((u, v, 1.0))
    if entries and draw(st.booleans()):
        entries += draw(st.lists(st.sampled_from(entries), max_size=4))
    if draw(st.booleans()):
        entries += [(j, i, w) for i, j, w in entries]
    return entries


@st.composite
def adjacencies(draw: Any, n: int, with_edge: bool = False, max_weight: float = 1e6) -> Any:
    entries = draw(edge_lists(n, with_edge, max_weight))
    return _stored(_coo(entries, (n, n)), draw(st.sampled_from([*SPARSE_FORMATS, "dense"])))


@st.composite
def features(draw: Any, n: int, n_features: int | None = None) -> Any:
    """(n, f) features: float32/float64/int, dense or sparse, with zero or constant columns."""
    f = draw(st.integers(1, 5)) if n_features is None else n_features
    X = draw(hnp.arrays(np.float64, (n, f), elements=FEATURE_VALUES))
    if draw(st.booleans()):
        X[:, draw(st.integers(0, f - 1))] = draw(st.sampled_from([0.0, 1.0, -1e4]))
    if draw(st.booleans()):
        X[draw(hnp.arrays(bool, (n, f)))] = 0.0
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32, np.int64]))
    X = np.round(X).astype(dtype) if np.issubdtype(dtype, np.integer) else X.astype(dtype)
    fmt = draw(st.sampled_from(["dense", *SPARSE_FORMATS]))
    return X if fmt == "dense" else _stored(sp.coo_array(X), fmt)


@st.composite
def class_labels(draw: Any, n: int, names: bool = False) -> Any:
    """1-D labels with -1 for unlabelled nodes and at least two classes among the labelled."""
    values = draw(st.lists(st.integers(0, 9), min_size=2, max_size=4, unique=True))
    y = draw(st.lists(st.sampled_from([-1, *values]), min_size=n, max_size=n))
    i, j = draw(st.permutations(range(n)))[:2]
    y[i], y[j] = values[0], values[1]
    kinds = [None, np.int64, np.int32, np.float64, *(["names"] if names else [])]
    dtype = draw(st.sampled_from(kinds))
    if dtype == "names":  # the user's own labels: strings, None for an unlabelled node
        return np.array([None if v < 0 else f"class-{v}" for v in y], dtype=object)
    return y if dtype is None else np.asarray(y, dtype=dtype)


def _classes_of(y: np.ndarray) -> np.ndarray:
    """The classes a 1-D ``y`` of ``class_labels`` names, sorted."""
    if y.dtype == object:
        return np.unique([v for v in y if v is not None])
    return np.unique(y[y >= 0])


@st.composite
def indicator_labels(draw: Any, n: int) -> Any:
    """A 2-D 0/1 multi-label indicator with -1 for unknown entries, at least one known."""
    n_labels = draw(st.integers(2, 3))  # one column is class labels, as in scikit-learn
    Y = draw(hnp.arrays(np.int64, (n, n_labels), elements=st.sampled_from([-1, 0, 1])))
    Y[draw(st.integers(0, n - 1)), draw(st.integers(0, n_labels - 1))] = draw(
        st.sampled_from([0, 1])
    )
    storage = draw(st.sampled_from(["int64", "float64", "csr_array"]))
    return sp.csr_array(Y) if storage == "csr_array" else Y.astype(storage)


@st.composite
def network_params(draw: Any, n: int, backbone: str) -> dict[str, Any]:
    """Hyper-parameters shared by both estimators, drawn from small ranges."""
    widths = draw(st.lists(st.integers(4, 8), min_size=1, max_size=2))
    # mini-batches (VQ) in about 3 of 4 examples, the full graph (None or n) in the others; at
    # most about 6 batches per epoch, to keep an example under half a second
    if n == 1 or (draw(st.booleans()) and draw(st.booleans())):
        batch_size = draw(st.sampled_from([None, n]))
    else:
        batch_size = draw(st.integers(max(1, n // 6), n - 1))
    heads = None
    if backbone == "gat":
        heads = draw(st.sampled_from([h for h in (1, 2, 3, 4) if all(w % h == 0 for w in widths)]))
    elif backbone == "transformer":
        heads = draw(st.sampled_from([None, 1, 2, 3]))
    return dict(
        backbone=backbone,
        hidden_layer_sizes=tuple(widths),
        heads=heads,
        batch_size=batch_size,
        n_codewords=draw(st.integers(1, n)),
        sampler=draw(st.sampled_from(["cluster", "random"])),
        parts_per_batch=draw(st.integers(1, 4)),
        inference=draw(st.sampled_from(["vq", "exact"])),
        backward_messages=draw(st.sampled_from(["codewords", "none"])),
        max_epochs=draw(st.integers(1, 2)),
        device="cpu",
        random_state=draw(st.integers(0, 2**16)),
    )


@st.composite
def classification_problems(draw: Any, backbone: str) -> tuple[Any, Any, Any, dict]:
    multilabel = draw(st.booleans())
    n = draw(st.integers(1 if multilabel else 2, MAX_NODES))
    y = draw(indicator_labels(n) if multilabel else class_labels(n, names=True))
    A = draw(adjacencies(n, max_weight=MAX_WEIGHT.get(backbone, 1e6)))
    return A, draw(features(n)), y, draw(network_params(n, backbone))


def _message_gain(A: Any, backbone: str) -> float:
    """How much one message-passing step of ``backbone`` can scale a feature (the max-row-sum norm
    of its convolution): GCN-normalised for gcn and the transformer, ``A + I`` for gin; sage
    (means) and gat (attention) average their inputs."""
    M = sp.csr_array(A.toarray() if sp.issparse(A) else A, dtype=np.float32)
    if backbone in ("gcn", "transformer"):
        M = gcn_norm(M)
    elif backbone == "gin":
        M = M + sp.eye_array(M.shape[0], dtype=np.float32)
    else:
        return 1.0
    return max(1.0, float(np.abs(M).sum(1).max()))


def _within_float32(A: Any, X: Any, params: dict) -> bool:
    """Whether ``gain ** n_layers * max|X|`` stays below 1e15, so that the embeddings and their
    products (link scores, attention scores), about its square, fit in float32 (3.4e38). Inputs
    beyond it are the known bugs of the ``test_known_overflow_*`` tests at the end."""
    X = X.toarray() if sp.issparse(X) else np.asarray(X)
    scale = max(1.0, float(np.abs(X).max()))
    n_layers = len(params["hidden_layer_sizes"]) + 1
    return _message_gain(A, params["backbone"]) ** n_layers * scale <= 1e15


def _events(A: Any, params: dict) -> None:
    """Label the example in ``--hypothesis-show-statistics`` with its training mode."""
    mini_batch = params["batch_size"] is not None and params["batch_size"] < A.shape[0]
    event(f"{params['sampler']} mini-batches" if mini_batch else "full graph")


def _check_classifier_outputs(clf: VQGNNClassifier, A: Any, X: Any) -> None:
    """Shapes, finiteness and consistency of predict, predict_proba and decision_function."""
    n, k = A.shape[0], len(clf.classes_)
    logits = clf.decision_function(A, X)
    proba = clf.predict_proba(A, X)
    pred = clf.predict(A, X)
    binary = k == 2 and not clf.multilabel_  # scikit-learn's (n,) scores of classes_[1]
    assert proba.shape == (n, k) and logits.shape == ((n,) if binary else (n, k))
    assert np.isfinite(logits).all() and np.isfinite(proba).all()
    assert ((proba >= 0) & (proba <= 1)).all()
    if clf.multilabel_:
        assert pred.shape == (n, k)
        assert np.isin(pred, (0, 1)).all()
        np.testing.assert_array_equal(pred, (logits > 0).astype(int))
    else:
        assert pred.shape == (n,)
        np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
        assert np.isin(pred, clf.classes_).all()
        best = (logits > 0).astype(int) if binary else logits.argmax(1)
        np.testing.assert_array_equal(pred, clf.classes_[best])


GRAPH_FORMS = ["scipy", "torch dense", "torch sparse", "networkx", "PyG Data"]


def _in_form(form: str, A: Any, X: Any) -> Any:
    """The graph ``(A, X)`` as a user may hold it: ``(A', X)`` or one object with both."""
    from types import SimpleNamespace

    import networkx as nx

    if form == "scipy":
        return A, X
    dense = A.toarray() if sp.issparse(A) else np.asarray(A)
    if form == "torch dense":
        return torch.from_numpy(dense), X
    if form == "torch sparse":
        return torch.from_numpy(dense).to_sparse(), X
    coo = sp.coo_array(dense)
    if form == "networkx":  # A[i, j] is the edge j -> i, which networkx sends to row i
        G = nx.DiGraph()
        G.add_nodes_from(range(dense.shape[0]))
        edges = zip(coo.col.tolist(), coo.row.tolist(), coo.data.tolist(), strict=True)
        G.add_weighted_edges_from(edges)
        return G, X
    x = X.toarray() if sp.issparse(X) else np.asarray(X)
    return SimpleNamespace(  # PyG's Data: edge_index (2, m) source -> target
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(np.stack([coo.col, coo.row]).astype(np.int64)),
        edge_weight=torch.from_numpy(coo.data),
        num_nodes=dense.shape[0],
    )


@pytest.mark.parametrize("backbone", BACKBONES)
@settings(PROPERTY, max_examples=24)
@given(data=st.data())
def test_classifier_fit_predict_is_finite_and_well_formed(backbone, data):
    A, X, y, params = data.draw(classification_problems(backbone), label="A, X, y, params")
    assume(_within_float32(A, X, params))
    _events(A, params)
    event("multi-label" if np.ndim(y) == 2 else "single-label")
    form = data.draw(st.sampled_from(GRAPH_FORMS), label="the graph's form")
    event(f"graph given as {form}")
    clf = VQGNNClassifier(**params)
    given_graph = _in_form(form, A, X)
    clf.fit(*given_graph, y) if isinstance(given_graph, tuple) else clf.fit(given_graph, y)
    # the same content in any form is the training graph, not a new one
    assert clf.graph_fingerprint_ == Graph(A, X).fingerprint
    y = y.toarray() if sp.issparse(y) else np.asarray(y)
    if y.ndim == 2:
        np.testing.assert_array_equal(clf.classes_, np.arange(y.shape[1]))
    else:
        np.testing.assert_array_equal(clf.classes_, _classes_of(y))
    assert clf.transduction_.shape == y.shape
    assert clf.n_iter_ == params["max_epochs"]
    _check_classifier_outputs(clf, A, X)


@pytest.mark.parametrize("backbone", BACKBONES)
@settings(PROPERTY, max_examples=6)
@given(data=st.data())
def test_classifier_predicts_on_a_new_graph_with_the_same_features(backbone, data):
    A, X, y, params = data.draw(classification_problems(backbone), label="A, X, y, params")
    m = data.draw(st.integers(1, MAX_NODES), label="new n_nodes")
    A_new = data.draw(adjacencies(m, max_weight=MAX_WEIGHT.get(backbone, 1e6)), label="A_new")
    X_new = data.draw(features(m, X.shape[1]), label="X_new")
    assume(_within_float32(A, X, params) and _within_float32(A_new, X_new, params))
    clf = VQGNNClassifier(**params).fit(A, X, y)
    _check_classifier_outputs(clf, A_new, X_new)


@st.composite
def link_problems(draw: Any, backbone: str) -> tuple[Any, Any, np.ndarray, dict]:
    n = draw(st.integers(2, MAX_NODES))
    params = draw(network_params(n, backbone))
    params.update(
        embedding_dim=draw(st.integers(4, 8)),
        decoder=draw(st.sampled_from(["dot", "hadamard"])),
        n_negatives=draw(st.integers(1, 2)),
        negative_sampling=draw(st.sampled_from(["exclude", "uniform"])),
        negative_nodes=draw(st.one_of(st.just("batch_size"), st.integers(0, n))),
        partner_nodes=draw(st.one_of(st.just("batch_size"), st.integers(0, n))),
    )
    node = st.integers(0, n - 1)
    pairs = np.asarray(draw(st.lists(st.tuples(node, node), max_size=12)), dtype=np.int64)
    A = draw(adjacencies(n, with_edge=True, max_weight=MAX_WEIGHT.get(backbone, 1e6)))
    return A, draw(features(n)), pairs.reshape(-1, 2), params


@pytest.mark.parametrize("backbone", BACKBONES)
@settings(PROPERTY, max_examples=12)
@given(data=st.data())
def test_link_predictor_scores_are_finite(backbone, data):
    A, X, pairs, params = data.draw(link_problems(backbone), label="A, X, pairs, params")
    assume(_within_float32(A, X, params))
    _events(A, params)
    lp = VQGNNLinkPredictor(**params).fit(A, X)
    scores = lp.decision_function(A, X, pairs)
    proba = lp.predict_proba(A, X, pairs)
    assert scores.shape == (len(pairs),)
    assert np.isfinite(scores).all()
    assert proba.shape == (len(pairs), 2)
    assert ((proba >= 0) & (proba <= 1)).all()
    np.testing.assert_allclose(proba.sum(1), 1.0)
    np.testing.assert_array_equal(lp.predict(A, X, pairs), (scores >= 0).astype(int))


# -- invalid input -------------------------------------------------------------------------------
class Invalid(NamedTuple):
    """A call that must fail: ``VQGNNClassifier(**params).fit(*args)`` raising ``error`` with a
    message matching ``match``."""

    params: dict
    args: tuple
    error: type[Exception]
    match: str


FAST = dict(hidden_layer_sizes=(4,), max_epochs=1, device="cpu", random_state=0)


@st.composite
def base_problem(draw: Any) -> tuple[int, list, Any, Any, dict]:
    """A valid ``(n, edge list, X, y, params)``; each invalid case corrupts one part of it."""
    n = draw(st.integers(2, 12))
    entries = draw(edge_lists(n))
    y = draw(st.one_of(class_labels(n), indicator_labels(n)))
    params = dict(FAST, n_codewords=draw(st.integers(1, n)))
    params["batch_size"] = draw(st.one_of(st.none(), st.integers(1, n)))
    return n, entries, draw(features(n)), y, params


def _adjacency(draw: Any, entries: list, shape: tuple[int, int]) -> Any:
    return _stored(_coo(entries, shape), draw(st.sampled_from([*SPARSE_FORMATS, "dense"])))


def _float_features(draw: Any, n: int, X: Any, value: float) -> Any:
    """``X`` as float64 with ``value`` written at one random entry, dense or sparse."""
    X = (X.toarray() if sp.issparse(X) else X).astype(np.float64)
    X[draw(st.integers(0, n - 1)), draw(st.integers(0, X.shape[1] - 1))] = value
    fmt = draw(st.sampled_from(["dense", *SPARSE_FORMATS]))
    return X if fmt == "dense" else _stored(sp.coo_array(X), fmt)


def _labels_1d(draw: Any, n: int) -> np.ndarray:
    return np.asarray(draw(class_labels(n)), dtype=np.float64)


@st.composite
def x_not_finite(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    X = _float_features(draw, n, X, draw(st.sampled_from([np.nan, np.inf, -np.inf])))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, "X contains NaN or infinite values")


@st.composite
def a_not_finite(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
    entries = [*entries, (i, j, draw(st.sampled_from([np.nan, np.inf, -np.inf])))]
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, "A contains NaN or infinite edge weights")


@st.composite
def a_negative(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
    weight = -draw(st.floats(1e-30, 1e6))
    entries = [e for e in entries if e[:2] != (i, j)] + [(i, j, weight)] * draw(st.integers(1, 2))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, "A contains negative edge weights")


@st.composite
def a_not_square(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    extra = draw(st.integers(1, 3))
    shape = draw(st.sampled_from([(n, n + extra), (n + extra, n)]))
    A = _adjacency(draw, entries, shape)
    return Invalid(params, (A, X, y), ValueError, re.escape("A must be square (n_nodes, n_nodes)"))


@st.composite
def a_dense_not_2d(draw: Any) -> Invalid:
    n, _, X, y, params = draw(base_problem())
    shape = draw(st.sampled_from([(), (n,), (n, n, 1), (1, n, n), (n, n, 2)]))
    A = np.zeros(shape)
    return Invalid(params, (A, X, y), ValueError, re.escape("A must be 2-D (n_nodes, n_nodes)"))


@st.composite
def x_row_mismatch(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    m = draw(st.integers(0, n + 2))
    m += m >= n
    X = draw(features(m, X.shape[1])) if m else np.zeros((0, X.shape[1]))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, f"X has {m} rows but A has {n} nodes")


@st.composite
def x_not_2d(draw: Any) -> Invalid:
    n, entries, _, y, params = draw(base_problem())
    X = np.ones(draw(st.sampled_from([(n,), (n, 2, 1)])))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, re.escape("X must be 2-D (n_nodes, n_features)"))


@st.composite
def x_no_column(draw: Any) -> Invalid:
    n, entries, _, y, params = draw(base_problem())
    X = np.zeros((n, 0)) if draw(st.booleans()) else sp.csr_array((n, 0))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, "X must have at least one feature column")


@st.composite
def x_not_numeric(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    X = np.asarray(X.toarray() if sp.issparse(X) else X).astype(str)
    if draw(st.booleans()):  # strings held as objects: still not numbers
        X = X.astype(object)
        X[0, 0] = "not a number"
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), TypeError, "X must hold numbers")


@st.composite
def y_wrong_length(draw: Any) -> Invalid:
    n, entries, X, _, params = draw(base_problem())
    m = draw(st.integers(2, n + 2))
    m += m >= n
    multilabel = draw(st.booleans())
    y = draw(indicator_labels(m) if multilabel else class_labels(m))
    match = f"y has {m} rows but {n} nodes" if multilabel else f"y has {m} entries but {n} nodes"
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, match)


@st.composite
def y_not_1d_or_2d(draw: Any) -> Invalid:
    n, entries, X, _, params = draw(base_problem())
    y = np.zeros(draw(st.sampled_from([(n, 2, 1), (n, 1, 1), ()])), dtype=np.int64)
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, "y must be 1-D")


@st.composite
def y_all_unlabelled(draw: Any) -> Invalid:
    n, entries, X, _, params = draw(base_problem())
    y = np.full(draw(st.sampled_from([(n,), (n, 1), (n, 3)])), -1)
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, "y has no labelled node")


@st.composite
def y_single_class(draw: Any) -> Invalid:
    n, entries, X, _, params = draw(base_problem())
    label = draw(st.integers(0, 9))
    y = draw(st.lists(st.sampled_from([-1, label]), min_size=n, max_size=n))
    y[draw(st.integers(0, n - 1))] = label
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, "y must contain at least 2 classes")


@st.composite
def y_mixed_types(draw: Any) -> Invalid:
    n, entries, X, _, params = draw(base_problem())
    y = draw(st.lists(st.sampled_from(["a", "b", 0, 1]), min_size=n, max_size=n))
    y[0], y[-1] = "a", 1  # strings and integers cannot be ordered together
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, np.asarray(y, dtype=object)), ValueError, "y mixes labels")


@st.composite
def y_not_integer(draw: Any) -> Invalid:
    n, entries, X, _, params = draw(base_problem())
    y = _labels_1d(draw, n)
    y[draw(st.integers(0, n - 1))] = draw(
        st.one_of(
            st.sampled_from([np.inf, -np.inf, 0.5]),  # (NaN marks an unlabelled node)
            st.integers(-1, 9).map(lambda v: v + 0.25),
        )
    )
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, "y must hold integer class labels")


@st.composite
def y_below_minus_one(draw: Any) -> Invalid:
    n, entries, X, _, params = draw(base_problem())
    y = _labels_1d(draw, n).astype(np.int64)
    y[draw(st.integers(0, n - 1))] = draw(st.integers(-(2**40), -2))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, "y holds labels < -1")


@st.composite
def indicator_out_of_range(draw: Any) -> Invalid:
    n, entries, X, _, params = draw(base_problem())
    Y = draw(indicator_labels(n))
    Y = (Y.toarray() if sp.issparse(Y) else Y).astype(np.float64)
    Y[draw(st.integers(0, n - 1)), draw(st.integers(0, Y.shape[1] - 1))] = draw(
        st.sampled_from([2, -2, 0.5, 5, np.nan])
    )
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, Y), ValueError, "its entries must be 0 or 1")


@st.composite
def n_codewords_below_one(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    params["n_codewords"] = draw(st.integers(-5, 0))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), InvalidParameterError, "'n_codewords' parameter")


@st.composite
def batch_size_below_one(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    params["batch_size"] = draw(st.integers(-5, 0))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), InvalidParameterError, "'batch_size' parameter")


@st.composite
def unknown_backbone(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    params["backbone"] = draw(st.text(max_size=8).filter(lambda s: s not in BACKBONES))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), InvalidParameterError, "'backbone' parameter")


@st.composite
def n_codewords_above_n_in_mini_batches(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    params["n_codewords"] = draw(st.integers(n + 1, n + 20))
    params["batch_size"] = draw(st.integers(1, n - 1))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, f"n_codewords={params['n_codewords']} exceeds")


@st.composite
def codeword_dim_above_hidden_width(draw: Any) -> Invalid:
    n, entries, X, y, params = draw(base_problem())
    widths = draw(st.lists(st.integers(1, 8), min_size=1, max_size=2))
    params["hidden_layer_sizes"] = widths
    params["codeword_dim"] = draw(st.integers(min(widths) + 1, 12))
    A = _adjacency(draw, entries, (n, n))
    return Invalid(params, (A, X, y), ValueError, f"codeword_dim={params['codeword_dim']} is wider")


INVALID = {
    "X_not_finite": x_not_finite(),
    "A_not_finite": a_not_finite(),
    "A_negative_weight": a_negative(),
    "A_not_square": a_not_square(),
    "A_dense_not_2d": a_dense_not_2d(),
    "X_row_mismatch": x_row_mismatch(),
    "X_not_2d": x_not_2d(),
    "X_no_column": x_no_column(),
    "X_not_numeric": x_not_numeric(),
    "y_wrong_length": y_wrong_length(),
    "y_not_1d_or_2d": y_not_1d_or_2d(),
    "y_all_unlabelled": y_all_unlabelled(),
    "y_single_class": y_single_class(),
    "y_mixed_types": y_mixed_types(),
    "y_not_integer": y_not_integer(),
    "y_below_minus_one": y_below_minus_one(),
    "y_indicator_out_of_range": indicator_out_of_range(),
    "n_codewords_below_one": n_codewords_below_one(),
    "batch_size_below_one": batch_size_below_one(),
    "unknown_backbone": unknown_backbone(),
    "n_codewords_above_n_in_mini_batches": n_codewords_above_n_in_mini_batches(),
    "codeword_dim_above_hidden_width": codeword_dim_above_hidden_width(),
}


@pytest.mark.parametrize("kind", INVALID)
@settings(PROPERTY, max_examples=20)
@given(data=st.data())
def test_invalid_input_raises_the_documented_error(kind, data):
    case = data.draw(INVALID[kind], label=kind)
    with pytest.raises(case.error, match=case.match) as info:
        VQGNNClassifier(**case.params).fit(*case.args)
    assert info.type is case.error


@settings(PROPERTY, max_examples=20)
@given(n=st.integers(1, 6), data=st.data())
def test_link_predictor_rejects_a_graph_without_edges_between_distinct_nodes(n, data):
    loops = data.draw(st.lists(st.tuples(st.integers(0, n - 1), weights()), max_size=n))
    A = _adjacency(data.draw, [(i, i, w) for i, w in loops], (n, n))
    with pytest.raises(ValueError, match="A has no edge other than self-loops") as info:
        VQGNNLinkPredictor(**FAST).fit(A, data.draw(features(n)))
    assert info.type is ValueError


_FITTED: dict[str, Any] = {}


def _fitted(name: str) -> Any:
    """One small fitted estimator per kind, shared by the examples (fitting dominates their
    cost, and the property is about the inputs given afterwards)."""
    if name not in _FITTED:
        A = sp.csr_array(np.eye(6, k=1) + np.eye(6, k=-1))
        X = np.arange(18, dtype=np.float64).reshape(6, 3)
        if name == "classifier":
            _FITTED[name] = VQGNNClassifier(**FAST, batch_size=3, n_codewords=2).fit(
                A, X, [0, 1, -1, 0, 1, -1]
            )
        else:
            _FITTED[name] = VQGNNLinkPredictor(**FAST, batch_size=3, n_codewords=2).fit(A, X)
    return _FITTED[name]


@settings(PROPERTY, max_examples=30)
@given(n=st.integers(1, MAX_NODES), f=st.sampled_from([1, 2, 4, 5, 8]), data=st.data())
def test_predict_with_another_feature_count_raises(n, f, data):
    A, X = data.draw(adjacencies(n), label="A"), data.draw(features(n, f), label="X")
    clf, lp = _fitted("classifier"), _fitted("link")
    match = f"X has {f} features, but {{}} is expecting 3 features as input"
    for method in (clf.predict, clf.predict_proba, clf.decision_function):
        with pytest.raises(ValueError, match=match.format("VQGNNClassifier")):
            method(A, X)
    with pytest.raises(ValueError, match=match.format("VQGNNLinkPredictor")):
        lp.decision_function(A, X, [[0, n - 1]])


@settings(PROPERTY, max_examples=20)
@given(n=st.integers(1, MAX_NODES), data=st.data())
def test_link_pairs_outside_the_graph_raise(n, data):
    A, X = data.draw(adjacencies(n), label="A"), data.draw(features(n, 3), label="X")
    bad = data.draw(st.one_of(st.integers(n, n + 5), st.integers(-5, -1)), label="bad node id")
    pairs = np.array([[0, 0], [bad, 0]])[:: data.draw(st.sampled_from([1, -1]))]
    with pytest.raises(ValueError, match=rf"pairs holds node ids outside \[0, {n}\)") as info:
        _fitted("link").decision_function(A, X, pairs)
    assert info.type is ValueError


# -- found by the properties: two fixed (sparse A that is not 2-D, link probability overflow
# warning); known float32 overflows pinned by strict xfails (drop the marks, and the
# _within_float32 filter, once they pass) ------------------------------------------------
@pytest.mark.parametrize("shape", [(6,), (6, 6, 1)])
def test_sparse_adjacency_that_is_not_2d_raises_the_documented_error(shape):
    A = sp.coo_array(np.ones(shape))
    with pytest.raises(ValueError, match=re.escape("A must be 2-D (n_nodes, n_nodes)")):
        VQGNNClassifier(**FAST).fit(A, np.ones((6, 2)), [0, 1, -1, -1, -1, -1])


def test_link_probabilities_of_large_scores_are_computed_without_overflow():
    lp = copy.copy(_fitted("link"))
    lp.decision_function = lambda *args: np.array([-1e4, -800.0, 0.0, 800.0, 1e4], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proba = lp.predict_proba(None, None, None)
    np.testing.assert_allclose(proba[:, 1], [0.0, 0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(proba.sum(1), 1.0)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="gcn_norm takes D̃ from the row sums of A + I, so on a directed graph an edge into a "
    "node whose row holds only a 1e-30 self-loop gets the weight 1e6 / sqrt(1e6 * 1e-30) = 1e18",
)
def test_known_overflow_transformer_on_a_directed_graph_with_a_tiny_self_loop():
    A = sp.csr_array(([1e6, 1e-30], ([0, 1], [1, 1])), shape=(2, 2))
    X = np.full((2, 1), 1e4)
    clf = VQGNNClassifier("transformer", **{**FAST, "batch_size": None}).fit(A, X, [0, 1])
    assert np.isfinite(clf.decision_function(A, X)).all()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="the same 1e18 GCN weight: the dot-product score is inf",
)
def test_known_overflow_gcn_link_scores_on_a_directed_graph_with_a_tiny_self_loop():
    A = sp.csr_array(([1e6, 1e-30], ([0, 1], [1, 1])), shape=(2, 2))
    X = np.full((2, 1), -1e4)
    lp = VQGNNLinkPredictor(**FAST, batch_size=None, decoder="dot", embedding_dim=4).fit(A, X)
    assert np.isfinite(lp.decision_function(A, X, [[0, 0], [0, 1]])).all()


def test_overflowing_gin_link_training_stops_with_an_error():
    """gin sums weighted messages: weights 1e6 and features 1e4 give embeddings near 3e19,
    whose dot product overflows float32. Training stops with an error that says so, instead
    of returning inf scores without a word."""
    A = sp.csr_array(np.full((4, 4), 1e6) - np.diag(np.full(4, 1e6)))
    X = np.full((4, 1), 1e4)
    params = {**FAST, "hidden_layer_sizes": (4, 4), "batch_size": None}
    with pytest.raises(ValueError, match="training diverged at epoch 0: the loss is nan"):
        VQGNNLinkPredictor("gin", **params, decoder="dot", embedding_dim=4).fit(A, X)
