"""Every bad input we know of, the error it gets, and the page that lists them.

``CASES`` is the catalogue: each entry names the argument at fault, the input, the exception and
a fragment of its message that names the argument. ``doc/input_validation.md`` is generated from
it (``python -m tests.test_bad_input > doc/input_validation.md``), and a test checks that the
page is current, so the table cannot drift from what the code does.
"""

from __future__ import annotations

import contextlib
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple
from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError

from skvqgnn import Graph, VQGNNClassifier, VQGNNLinkPredictor
from skvqgnn.datasets import make_csbm
from skvqgnn.distributed import Simulated
from skvqgnn.model_selection import edge_split
from skvqgnn.shards import load_shard, write_shards

PAGE = Path(__file__).resolve().parents[1] / "doc" / "input_validation.md"
N = 60


class Case(NamedTuple):
    argument: str
    given: str
    call: Callable[[], Any]
    error: type[BaseException]
    match: str


def _data():
    A, X, y, _ = make_csbm(
        n_nodes=N, n_classes=3, avg_degree=4, n_features=8, feature_noise=1.0, random_state=0
    )
    return sp.csr_array(A), X, y


A, X, Y = _data()
FAST = dict(batch_size=20, n_codewords=8, max_epochs=1, random_state=0)


def _clf(**params):
    return VQGNNClassifier(**{**FAST, **params})


_fitted: list[VQGNNClassifier] = []


def _trained() -> VQGNNClassifier:
    if not _fitted:
        _fitted.append(_clf().fit(A, X, Y))
    return _fitted[0]


def _without_cuda(call):
    """Run ``call`` as on a machine without CUDA (the same message on every machine)."""
    with mock.patch.object(torch.cuda, "is_available", return_value=False):
        return call()


def _with_partition(call, backbone="gcn"):
    """``call(shard)`` on a 2-part partition of the graph (a relative folder: the page shows no
    machine path); ``call()`` when it takes no argument (it writes its own)."""
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        if call.__code__.co_argcount == 0:
            return call()
        write_shards("parts", A, X, 2, y=Y, backbone=backbone)
        return call(load_shard("parts", "all"))


def _write_shards(*args, **kwargs):
    return write_shards("parts", *args, **kwargs)


def _load_joblib_file():
    import joblib

    from skvqgnn.persistence import load

    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        joblib.dump(_trained(), "model.joblib")  # a relative name: the page shows no machine path
        return load("model.joblib")


def _with(matrix, value, where=(0, 0)):
    out = matrix.astype(np.float64, copy=True)
    if sp.issparse(out):
        out = out.tocoo()
        out.data[0] = value
        return out.tocsr()
    out[where] = value
    return out


CASES = [
    # -- the adjacency ------------------------------------------------------------------------
    Case("A", "1-D array", lambda: _clf().fit(np.zeros(N), X, Y), ValueError, "A must be 2-D"),
    Case("A", "3-D array", lambda: _clf().fit(np.zeros((N, N, 1)), X, Y), ValueError, "2-D"),
    Case(
        "A",
        "sparse 1-D array",
        lambda: _clf().fit(sp.coo_array(np.ones(N)), X, Y),
        ValueError,
        "A must be 2-D",
    ),
    Case("A", "not square (50 × 60)", lambda: _clf().fit(A[:50], X, Y), ValueError, "square"),
    Case(
        "A",
        "no node (0 × 0)",
        lambda: _clf().fit(sp.csr_array((0, 0)), np.zeros((0, 8)), np.zeros(0, int)),
        ValueError,
        "the graph has no node",
    ),
    Case(
        "A",
        "complex edge weights",
        lambda: _clf().fit(A * (1 + 1j), X, Y),
        ValueError,
        "A must hold real numbers",
    ),
    Case("A", "a NaN edge weight", lambda: _clf().fit(_with(A, np.nan), X, Y), ValueError, "A "),
    Case("A", "an inf edge weight", lambda: _clf().fit(_with(A, np.inf), X, Y), ValueError, "A "),
    Case(
        "A",
        "a negative edge weight",
        lambda: _clf().fit(_with(A, -1.0), X, Y),
        ValueError,
        "negative edge weights",
    ),
    Case(
        "A",
        "strings",
        lambda: _clf().fit(np.full((N, N), "1", dtype=object), X, Y),
        TypeError,
        "A must be",
    ),
    # -- the features -------------------------------------------------------------------------
    Case("X", "50 rows for 60 nodes", lambda: _clf().fit(A, X[:50], Y), ValueError, "X has 50"),
    Case("X", "1-D array", lambda: _clf().fit(A, X[:, 0], Y), ValueError, "X must be 2-D"),
    Case("X", "no column", lambda: _clf().fit(A, X[:, :0], Y), ValueError, "X must have"),
    Case("X", "a NaN", lambda: _clf().fit(A, _with(X, np.nan), Y), ValueError, "X contains"),
    Case("X", "an inf", lambda: _clf().fit(A, _with(X, np.inf), Y), ValueError, "X contains"),
    Case(
        "X",
        "a NaN in a sparse matrix",
        lambda: _clf().fit(A, _with(sp.csr_array(X), np.nan), Y),
        ValueError,
        "X contains",
    ),
    Case("X", "strings", lambda: _clf().fit(A, X.astype(str), Y), TypeError, "X must hold"),
    Case("X", "complex numbers", lambda: _clf().fit(A, X + 1j, Y), ValueError, "real numbers"),
    Case(
        "X",
        "a finite value beyond float32 (1e39)",
        lambda: _clf().fit(A, _with(X, 1e39), Y),
        ValueError,
        "beyond float32's range",
    ),
    Case(
        "X",
        "given with a NodeSet: fit(nodes, X, y)",
        lambda: _clf().fit(Graph(A, X).nodes([0, 1, 2]), X, Y[:3]),
        TypeError,
        "X was given with a NodeSet",
    ),
    Case(
        "X",
        "so large the training overflows (X * 1e30)",
        lambda: _clf(max_epochs=3).fit(A, X * 1e30, Y),
        ValueError,
        "training diverged at epoch 0",
    ),
    Case("X", "missing: fit(A, y)", lambda: _clf().fit(A, Y), ValueError, "X must be 2-D"),
    Case("X", "None", lambda: _clf().fit(A, None, Y), TypeError, "features X"),
    # -- the labels ---------------------------------------------------------------------------
    Case("y", "50 labels for 60 nodes", lambda: _clf().fit(A, X, Y[:50]), ValueError, "y has 50"),
    Case("y", "every label -1", lambda: _clf().fit(A, X, np.full(N, -1)), ValueError, "y has no"),
    Case(
        "y",
        "a single class",
        lambda: _clf().fit(A, X, np.zeros(N, int)),
        ValueError,
        "y must contain at least 2 classes",
    ),
    Case(
        "y",
        "labels of mixed types (ints and strings)",
        lambda: _clf().fit(A, X, np.array(["a", *Y[1:]], dtype=object)),
        ValueError,
        "y mixes labels of types",
    ),
    Case("y", "complex labels", lambda: _clf().fit(A, X, Y + 1j), ValueError, "y must hold"),
    Case(
        "y",
        "a node twice in a NodeSet with two labels",
        lambda: _clf().fit(Graph(A, X).nodes([0, 1, 0]), np.array([0, 1, 2])),
        ValueError,
        "node 0 appears more than once",
    ),
    Case(
        "y",
        "score where every label is -1",
        lambda: _trained().score(A, X, np.full(N, -1)),
        ValueError,
        "no labelled node to score",
    ),
    Case(
        "y",
        "non-integer floats",
        lambda: _clf().fit(A, X, Y + 0.5),
        ValueError,
        "y must hold integer class labels",
    ),
    Case(
        "y",
        "every entry NaN (NaN marks an unlabelled node)",
        lambda: _clf().fit(A, X, np.full(N, np.nan)),
        ValueError,
        "no labelled node",
    ),
    Case(
        "y",
        "integer labels -1 and 1 (-1 marks an unlabelled node)",
        lambda: _clf().fit(A, X, np.where(Y == 0, -1, 1)),
        ValueError,
        "if -1 is one of your classes",
    ),
    Case("y", "a label < -1", lambda: _clf().fit(A, X, Y - 2), ValueError, "y holds labels < -1"),
    Case("y", "3-D array", lambda: _clf().fit(A, X, Y[:, None, None]), ValueError, "y must be"),
    Case(
        "y",
        "multi-label indicator holding a 2",
        lambda: _clf().fit(A, X, np.stack([Y, Y], 1)),
        ValueError,
        "entries must be 0 or 1",
    ),
    Case(
        "y",
        "multi-label indicator with 50 rows",
        lambda: _clf().fit(A, X, np.zeros((50, 2), int)),
        ValueError,
        "y has 50 rows",
    ),
    Case(
        "y",
        "multi-label indicator with no column",
        lambda: _clf().fit(A, X, np.zeros((N, 0), int)),
        ValueError,
        "no label column",
    ),
    Case("y", "missing", lambda: _clf().fit(A, X), ValueError, "fit needs the labels y"),
    # -- parameters ---------------------------------------------------------------------------
    Case(
        "n_codewords",
        "0",
        lambda: _clf(n_codewords=0).fit(A, X, Y),
        InvalidParameterError,
        "n_codewords",
    ),
    Case(
        "n_codewords",
        "more than the 60 nodes",
        lambda: _clf(n_codewords=61).fit(A, X, Y),
        ValueError,
        "n_codewords=61 exceeds",
    ),
    Case(
        "codeword_dim",
        "0",
        lambda: _clf(codeword_dim=0).fit(A, X, Y),
        InvalidParameterError,
        "codeword_dim",
    ),
    Case(
        "codeword_dim",
        "wider than the hidden layer (16 > 8)",
        lambda: _clf(codeword_dim=16, hidden_layer_sizes=(8,)).fit(A, X, Y),
        ValueError,
        "codeword_dim=16 is wider",
    ),
    Case(
        "codeword_dim",
        "product slices with global attention",
        lambda: _clf(backbone="transformer", codeword_dim=4).fit(A, X, Y),
        ValueError,
        "codeword_dim",
    ),
    Case(
        "batch_size",
        "0",
        lambda: _clf(batch_size=0).fit(A, X, Y),
        InvalidParameterError,
        "batch_size",
    ),
    Case(
        "backbone",
        "unknown name 'gcnn'",
        lambda: _clf(backbone="gcnn").fit(A, X, Y),
        InvalidParameterError,
        "backbone",
    ),
    Case(
        "heads",
        "3 heads for a hidden width of 8",
        lambda: _clf(backbone="gat", heads=3, hidden_layer_sizes=(8,)).fit(A, X, Y),
        ValueError,
        "heads",
    ),
    Case(
        "hidden_layer_sizes",
        "a zero width",
        lambda: _clf(hidden_layer_sizes=(8, 0)).fit(A, X, Y),
        ValueError,
        "hidden_layer_sizes",
    ),
    Case(
        "dropout",
        "1.0",
        lambda: _clf(dropout=1.0).fit(A, X, Y),
        InvalidParameterError,
        "dropout",
    ),
    Case(
        "learning_rate",
        "0",
        lambda: _clf(learning_rate=0.0).fit(A, X, Y),
        InvalidParameterError,
        "learning_rate",
    ),
    Case(
        "accumulate_batches",
        "0",
        lambda: _clf(accumulate_batches=0).fit(A, X, Y),
        InvalidParameterError,
        "accumulate_batches",
    ),
    Case(
        "accumulate_batches",
        "an unknown string",
        lambda: _clf(accumulate_batches="batch").fit(A, X, Y),
        InvalidParameterError,
        "accumulate_batches",
    ),
    Case(
        "validation_fraction",
        "leaving no training node",
        lambda: _clf(early_stopping=True, validation_fraction=0.999).fit(
            A, X, np.where(np.arange(N) < 3, Y, -1)
        ),
        ValueError,
        "validation_fraction",
    ),
    Case(
        "batch_size",
        "True",
        lambda: _clf(batch_size=True).fit(A, X, Y),
        InvalidParameterError,
        "'batch_size' parameter of VQGNNClassifier must be an int, not the boolean",
    ),
    Case(
        "device",
        "'gpu'",
        lambda: _clf(device="gpu").fit(A, X, Y),
        ValueError,
        "device='gpu' is not a device PyTorch knows",
    ),
    Case(
        "device",
        "'cuda' on a machine without CUDA",
        lambda: _without_cuda(lambda: _clf(device="cuda").fit(A, X, Y)),
        ValueError,
        "device='cuda' asks for CUDA",
    ),
    Case(
        "device",
        "a CUDA index (1) on a machine without CUDA",
        lambda: _without_cuda(lambda: _clf(device=1).fit(A, X, Y)),
        ValueError,
        "device=1 asks for CUDA",
    ),
    Case(
        "class_weight",
        "a class that y does not have",
        lambda: _clf(class_weight={7: 2.0}).fit(A, X, Y),
        ValueError,
        "class",
    ),
    Case(
        "class_weight",
        "with a multi-label indicator y",
        lambda: _clf(class_weight="balanced").fit(A, X, np.stack([Y == 0, Y == 1], 1).astype(int)),
        ValueError,
        "class_weight is for class labels",
    ),
    Case(
        "sample_weight",
        "50 weights for 60 nodes",
        lambda: _clf().fit(A, X, Y, sample_weight=np.ones(50)),
        ValueError,
        "sample_weight must have shape (60,)",
    ),
    Case(
        "sample_weight",
        "a negative weight",
        lambda: _clf().fit(A, X, Y, sample_weight=-np.ones(N)),
        ValueError,
        "sample_weight must be finite and non-negative",
    ),
    Case(
        "validation_nodes",
        "an unlabelled node",
        lambda: _clf().fit(A, X, np.where(np.arange(N) < 30, Y, -1), validation_nodes=[0, 40]),
        ValueError,
        "validation_nodes holds 1 unlabelled node(s) (first: 40)",
    ),
    Case(
        "validation_nodes",
        "every labelled node",
        lambda: _clf().fit(A, X, Y, validation_nodes=np.ones(N, bool)),
        ValueError,
        "validation_nodes holds every labelled node",
    ),
    Case(
        "validation_nodes",
        "a boolean mask of 50 for 60 labels",
        lambda: _clf().fit(A, X, Y, validation_nodes=np.ones(50, bool)),
        ValueError,
        "validation_nodes as a boolean mask must have shape (60,)",
    ),
    Case(
        "warm_start",
        "after a change of hidden_layer_sizes",
        lambda: _clf(warm_start=True).fit(A, X, Y).set_params(hidden_layer_sizes=(8,)).fit(A, X, Y),
        ValueError,
        "hidden_layer_sizes changed from (64,) to (8,)",
    ),
    Case(
        "warm_start",
        "with fewer features than the fitted network",
        lambda: _clf(warm_start=True).fit(A, X, Y).fit(A, X[:, :5], Y),
        ValueError,
        "X has 5 features, the fitted network takes 8",
    ),
    # -- prediction ---------------------------------------------------------------------------
    Case("(estimator)", "predict before fit", lambda: _clf().predict(A, X), NotFittedError, "fit"),
    Case(
        "X",
        "predict with 5 features instead of 8",
        lambda: _trained().predict(A, X[:, :5]),
        ValueError,
        "X has 5 features",
    ),
    Case(
        "nodes",
        "a NodeSet of a graph with other features",
        lambda: _trained().predict(Graph(A, X[:, :5]).nodes([0, 1])),
        ValueError,
        "X has 5 features",
    ),
    Case(
        "nodes",
        "node index out of range",
        lambda: _trained().predict(Graph(A, X).nodes([N])),
        IndexError,
        "out of range",
    ),
    Case(
        "A",
        "predict on a graph with no node",
        lambda: _trained().predict(sp.csr_array((0, 0)), np.zeros((0, 8))),
        ValueError,
        "the graph has no node",
    ),
    Case(
        "nodes",
        "predict on an empty NodeSet",
        lambda: _trained().predict(Graph(A, X).nodes([])),
        ValueError,
        "the NodeSet is empty",
    ),
    Case(
        "X",
        "given with a NodeSet: predict(nodes, X)",
        lambda: _trained().predict(Graph(A, X).nodes([0]), X),
        TypeError,
        "X was given with a NodeSet",
    ),
    Case(
        "inference",
        "set to 'approx' after fit",
        lambda: _clf().fit(A, X, Y).set_params(inference="approx").predict(A, X),
        InvalidParameterError,
        "'inference' parameter of VQGNNClassifier must be 'vq' or 'exact'",
    ),
    Case(
        "y",
        "score with labels of another length",
        lambda: _trained().score(Graph(A, X).nodes([0, 1, 2]), Y[:2]),
        ValueError,
        "inconsistent numbers of samples",
    ),
    # -- link prediction ----------------------------------------------------------------------
    Case(
        "t",
        "fit(A, X, t)",
        lambda: VQGNNLinkPredictor(**FAST).fit(A, X, np.ones(3)),
        TypeError,
        "fit(A, X) takes no targets",
    ),
    Case(
        "A",
        "no edge (nothing to learn from)",
        lambda: VQGNNLinkPredictor(**FAST).fit(sp.csr_array((N, N)), X),
        ValueError,
        "no positive pair",
    ),
    Case(
        "A",
        "link predictor on a 0-node graph",
        lambda: VQGNNLinkPredictor(**FAST).fit(sp.csr_array((0, 0)), np.zeros((0, 3))),
        ValueError,
        "the graph has no node",
    ),
    Case(
        "decoder",
        "changed under warm_start=True",
        lambda: (
            VQGNNLinkPredictor(warm_start=True, **FAST)
            .fit(A, X)
            .set_params(decoder="dot")
            .fit(A, X)
        ),
        ValueError,
        "decoder changed from 'hadamard' to 'dot'",
    ),
    Case(
        "A",
        "edge_split of a graph without edges",
        lambda: edge_split(sp.csr_array((N, N)), val=0.1, test=0.1),
        ValueError,
        "A has no edge",
    ),
    Case(
        "path",
        "persistence.load of a joblib file",
        lambda: _load_joblib_file(),
        ValueError,
        "it is a pickle (joblib.dump or pickle.dump)",
    ),
    Case(
        "decoder",
        "unknown name 'cosine'",
        lambda: VQGNNLinkPredictor(decoder="cosine", **FAST).fit(A, X),
        InvalidParameterError,
        "decoder",
    ),
    Case(
        "partner_nodes",
        "-1",
        lambda: VQGNNLinkPredictor(partner_nodes=-1, **FAST).fit(A, X),
        InvalidParameterError,
        "partner_nodes",
    ),
    Case(
        "n_parts",
        "write_shards(..., 0)",
        lambda: _with_partition(lambda: _write_shards(A, X, 0, y=Y)),
        ValueError,
        "n_parts",
    ),
    Case(
        "partitioner",
        "write_shards(..., partitioner='spectral')",
        lambda: _with_partition(lambda: _write_shards(A, X, 2, y=Y, partitioner="spectral")),
        ValueError,
        "partitioner",
    ),
    Case(
        "backbone",
        "write_shards(..., backbone='gat')",
        lambda: _with_partition(lambda: _write_shards(A, X, 2, y=Y, backbone="gat")),
        ValueError,
        "fixed convolutions only",
    ),
    Case(
        "y",
        "write_shards with string labels",
        lambda: _with_partition(lambda: _write_shards(A, X, 2, y=Y.astype(str))),
        ValueError,
        "y must be integer class labels",
    ),
    Case(
        "rank",
        "load_shard(folder, 2) of a partition into 2",
        lambda: _with_partition(lambda shard: load_shard(shard.folder, 2)),
        ValueError,
        "rank must be",
    ),
    Case(
        "backbone",
        "fit(shard) with backbone='sage' on a GCN partition",
        lambda: _with_partition(lambda shard: _clf(backbone="sage").fit(shard)),
        ValueError,
        "written for backbone 'gcn', not 'sage'",
    ),
    Case(
        "y",
        "fit(shard, y=y): labels beside a partition",
        lambda: _with_partition(lambda shard: _clf().fit(shard, y=Y)),
        ValueError,
        "not y",
    ),
    Case(
        "distributed",
        "Simulated(3) on a partition into 2",
        lambda: _with_partition(lambda shard: _clf().fit(shard, distributed=Simulated(3))),
        ValueError,
        "simulate 2 ranks",
    ),
    Case(
        "A",
        "a GraphShard given to VQGNNLinkPredictor",
        lambda: _with_partition(lambda shard: VQGNNLinkPredictor(**FAST).fit(shard)),
        TypeError,
        "link prediction on a partitioned graph",
    ),
    Case(
        "inference",
        "'exact' on a GraphShard",
        lambda: _with_partition(
            lambda shard: _clf().fit(shard).set_params(inference="exact").predict(shard)
        ),
        ValueError,
        "inference='vq'",
    ),
]


def _raise(case: Case) -> BaseException:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            case.call()
        except Exception as exc:  # noqa: BLE001 - the catalogue records whatever is raised
            return exc
    raise AssertionError(f"{case.argument} / {case.given}: no error was raised")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.argument}-{c.given}" for c in CASES])
def test_bad_input_gets_its_documented_error(case):
    exc = _raise(case)
    assert type(exc) is case.error, f"{type(exc).__name__}: {exc}"
    assert case.match in str(exc), str(exc)


def _stable(message: str) -> str:
    """The message with the items of a printed set sorted (set order varies between runs)."""

    def sort(match: re.Match) -> str:
        items = sorted(item.strip() for item in match.group(1).split(","))
        return "{" + ", ".join(items) + "}"

    return re.sub(r"\{('[^{}]*')\}", sort, " ".join(message.split()))


def page() -> str:
    """The Markdown page of the catalogue, with each error's actual message."""
    lines = [
        "# Bad input and the error it gets",
        "",
        "Generated by `python -m tests.test_bad_input > doc/input_validation.md` from the "
        "catalogue in `tests/test_bad_input.py`; a test fails when this page is out of date. "
        f"The inputs are a {N}-node graph with 8 features and 3 classes. Errors are raised "
        "before any training starts. Inputs that are valid but unusual (directed graphs, "
        "self-loops, duplicate edges, isolated nodes, no edges, one node) are below the table.",
        "",
        "| # | argument | input | exception | message |",
        "|---|---|---|---|---|",
    ]
    for i, case in enumerate(CASES, 1):
        exc = _raise(case)
        message = _stable(str(exc)).replace("|", "\\|")
        lines.append(
            f"| {i} | `{case.argument}` | {case.given} | `{type(exc).__name__}` | {message} |"
        )
    lines += ["", VALID_BUT_UNUSUAL]
    return "\n".join(lines) + "\n"


VALID_BUT_UNUSUAL = """\
## Valid but unusual inputs: defined behaviour

Each is tested in `tests/test_bad_input.py` (`test_unusual_*`).

| input | behaviour |
|---|---|
| directed `A` (not symmetric) | row `i` of `A` lists the nodes `i` receives messages from; \
`A[i, j] != 0` sends `j`'s message to `i` only. Nothing is symmetrised. |
| self-loops | kept with their weight; GCN adds the missing ones (weight 1) and keeps existing \
ones, as PyG's `gcn_norm`; GAT attends over `N(i) ∪ {i}` once. |
| duplicate entries (COO) | summed into one weighted edge, as scipy's `sum_duplicates`. |
| explicit zeros | dropped: a zero weight is no edge. |
| isolated nodes | predicted from their own features (the self term of each convolution). |
| no edges at all | every node is predicted from its own features, as an MLP would (the \
transformer's global attention still reads every node). |
| one node | `fit` with single-label `y` raises (one node holds one class); a fitted model \
predicts a one-node graph; multi-label `fit` on one node works. |
| `n_codewords` > nodes with `batch_size=None` | allowed: full-graph training uses no codebook. |
| extreme magnitudes | known limit: float32 can overflow to inf/NaN for a directed graph whose \
node has only a tiny self-loop (say 1e-30) and receives a huge edge weight (GCN's `D̃^-½` gives \
it 1e18), and for GIN sums of weights near 1e6 times features near 1e4. Pinned by strict xfail \
tests in `tests/test_properties.py`; rescale such inputs. |
"""


def _fit_exact(A_, X_, y_, **params):
    return VQGNNClassifier(
        **{**FAST, "inference": "exact", "hidden_layer_sizes": (8,), **params}
    ).fit(A_, X_, y_)


def test_unusual_directed_graph_sends_along_rows_only():
    """With a directed edge 1 -> 0 (A[0, 1] = 1), changing node 1's features changes node 0's
    output but not the other way round."""
    A_ = sp.csr_array(([1.0, 1.0], ([0, 2], [1, 3])), shape=(4, 4))
    X_ = np.eye(4, dtype=np.float32)
    clf = _fit_exact(A_, X_, np.array([0, 1, 0, 1]), batch_size=None)
    base = clf.predict_proba(A_, X_)
    X1 = X_.copy()
    X1[1] += 5.0
    changed = np.abs(clf.predict_proba(A_, X1) - base).max(1) > 1e-6
    assert changed.tolist() == [True, True, False, False]
    X0 = X_.copy()
    X0[0] += 5.0
    changed = np.abs(clf.predict_proba(A_, X0) - base).max(1) > 1e-6
    assert changed.tolist() == [True, False, False, False]


def test_unusual_duplicates_are_summed_and_zeros_dropped():
    coo = sp.coo_array(([1.0, 2.0, 0.0], ([0, 0, 1], [1, 1, 2])), shape=(3, 3))
    G = Graph(coo, np.ones((3, 1)))
    assert G.A.nnz == 1 and G.A[0, 1] == 3.0


def test_unusual_self_loops_keep_their_weight_in_gcn():
    from skvqgnn.graph import gcn_norm

    A_ = sp.csr_array(np.array([[2.0, 1.0], [1.0, 0.0]]))
    C = gcn_norm(A_).toarray()
    deg = np.array([3.0, 2.0])  # node 0 keeps its loop of 2, node 1 gets a loop of 1
    np.testing.assert_allclose(C, np.array([[2, 1], [1, 1]]) / np.sqrt(np.outer(deg, deg)))


@pytest.mark.parametrize("backbone", ["gcn", "sage", "gin", "gat", "transformer"])
def test_unusual_graph_without_edges_predicts_each_node_from_its_own_features(backbone):
    empty = sp.csr_array((N, N))
    clf = _fit_exact(empty, X, Y, backbone=backbone, batch_size=None)
    base = clf.decision_function(empty, X)
    X1 = X.copy()
    X1[5] += 3.0
    changed = np.abs(clf.decision_function(empty, X1) - base).max(1) > 1e-6
    assert np.isfinite(base).all() and changed[5]
    if backbone == "transformer":  # global attention reads every node, edges or not
        assert changed.sum() > 1
    else:
        assert changed.tolist() == [i == 5 for i in range(N)]


@pytest.mark.parametrize("backbone", ["gcn", "sage", "gin", "gat", "transformer"])
def test_unusual_isolated_nodes_and_mini_batches_give_finite_output(backbone):
    lil = A.tolil()
    lil[:5, :] = 0
    lil[:, :5] = 0
    A_ = sp.csr_array(lil)
    clf = _clf(backbone=backbone, max_epochs=2).fit(A_, X, Y)
    for inference in ("vq", "exact"):
        proba = clf.set_params(inference=inference).predict_proba(A_, X)
        assert np.isfinite(proba).all()
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)


def test_unusual_one_node_graphs():
    one_A, one_X = sp.csr_array((1, 1)), X[:1]
    with pytest.raises(ValueError, match="at least 2 classes"):
        _clf().fit(one_A, one_X, Y[:1])
    assert _trained().predict(one_A, one_X).shape == (1,)
    multi = _clf().fit(one_A, one_X, np.array([[1, 0, 1]]))
    assert multi.predict(one_A, one_X).shape == (1, 3)


def test_unusual_n_codewords_above_n_is_fine_in_full_graph_mode():
    clf = _clf(n_codewords=10 * N, batch_size=None).fit(A, X, Y)
    assert clf.predict(A, X).shape == (N,)


def test_the_page_is_current():
    expected = page()
    assert PAGE.read_text(encoding="utf-8") == expected, (
        "regenerate it: python -m tests.test_bad_input > doc/input_validation.md"
    )


if __name__ == "__main__":
    sys.stdout.write(page())
