"""Multi-label node classification: y as an (n, n_labels) 0/1 indicator."""

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import f1_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from torch.nn import functional as F

from skvqgnn import Graph, VQGNNClassifier
from skvqgnn.classifier import NodeClassification
from skvqgnn.persistence import load, save

# one optimiser step per batch, so that a few epochs train the model
FAST = dict(
    batch_size=100,
    n_codewords=32,
    max_epochs=30,
    learning_rate=0.01,
    accumulate_batches=1,
    random_state=0,
)


@pytest.fixture(scope="module")
def multilabel(csbm):
    """Three overlapping labels derived from the csbm classes; -1 outside the training split."""
    A, X, y, split = csbm
    Y = np.stack([y == 0, y != 1, y == 2], 1).astype(np.int64)
    return A, X, Y, split, np.where(split.train_mask[:, None], Y, -1)


def test_fit_predict_indicator_and_per_label_probabilities(multilabel):
    A, X, Y, split, Y_train = multilabel
    clf = VQGNNClassifier(**FAST).fit(A, X, Y_train)
    assert clf.multilabel_ and clf.classes_.tolist() == [0, 1, 2]
    pred, proba = clf.predict(A, X), clf.predict_proba(A, X)
    assert pred.shape == proba.shape == Y.shape
    assert set(np.unique(pred)) <= {0, 1} and np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_array_equal(pred, (proba > 0.5).astype(int))
    np.testing.assert_array_equal(clf.transduction_, pred)
    # labels overlap: rows with two labels are predicted, not forced to one class
    assert (pred.sum(1) == 2).mean() > 0.2
    f1 = f1_score(Y[split.test_mask], pred[split.test_mask], average="micro")
    assert f1 > 0.8, f1
    assert clf.score(A, X, Y) == np.mean(np.all(pred == Y, axis=1))


def test_unknown_entries_get_no_gradient():
    """-1 entries of the indicator are left out of the BCE: the loss over a batch equals the
    BCE summed over the known entries only."""
    targets = torch.tensor([[1, -1, 0], [-1, -1, -1], [0, 1, -1]])
    task = NodeClassification(targets.numpy(), np.zeros((0, 3), np.int64), 3, multilabel=True)
    assert task.loss_mask.tolist() == [True, False, True] and task.n_targets == 4
    logits = torch.randn(3, 3, requires_grad=True)
    loss, count = task.loss(logits, torch.arange(3))
    known = targets >= 0
    assert count == int(known.sum())
    expected = F.binary_cross_entropy_with_logits(
        logits[known], targets[known].float(), reduction="sum"
    )
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.all(grad[~known] == 0) and torch.all(grad[known] != 0)


def test_sparse_indicator_and_partially_known_rows(multilabel):
    A, X, Y, split, Y_train = multilabel
    dense = VQGNNClassifier(**{**FAST, "max_epochs": 2}).fit(A, X, Y_train)
    sparse = VQGNNClassifier(**{**FAST, "max_epochs": 2}).fit(A, X, sp.csr_array(Y_train))
    np.testing.assert_allclose(dense.predict_proba(A, X), sparse.predict_proba(A, X), atol=1e-5)
    partial = Y_train.copy()
    partial[::2, 0] = -1  # label 0 unknown on half of the nodes
    VQGNNClassifier(**{**FAST, "max_epochs": 2}).fit(A, X, partial)


def test_grid_search_and_cross_validation_with_f1_micro(multilabel):
    A, X, Y, split, _ = multilabel
    G = Graph(A, X)
    idx = np.flatnonzero(split.train_mask | split.val_mask)
    params = {**FAST, "max_epochs": 5}
    search = GridSearchCV(
        VQGNNClassifier(**params), {"n_codewords": [8, 32]}, scoring="f1_micro", cv=2
    ).fit(G.nodes(idx), Y[idx])
    assert search.best_params_["n_codewords"] in (8, 32)
    assert search.best_score_ > 0.6, search.cv_results_["mean_test_score"]
    scores = cross_val_score(
        VQGNNClassifier(**params), G.nodes(idx), Y[idx], cv=2, scoring="f1_micro"
    )
    np.testing.assert_allclose(scores.mean(), search.cv_results_["mean_test_score"][1])


def test_early_stopping_scores_micro_f1(multilabel):
    A, X, Y, split, Y_train = multilabel
    clf = VQGNNClassifier(**{**FAST, "early_stopping": True, "n_iter_no_change": 5})
    clf.fit(A, X, Y_train)
    scores = [h["val_score"] for h in clf.history_]
    assert all(0 <= s <= 1 for s in scores) and max(scores) > 0.7


def test_persistence_round_trips(multilabel, tmp_path):
    A, X, Y, split, Y_train = multilabel
    clf = VQGNNClassifier(**{**FAST, "max_epochs": 2}).fit(A, X, Y_train)
    joblib.dump(clf, tmp_path / "m.joblib")
    save(clf, tmp_path / "m.pt")
    for loaded in (joblib.load(tmp_path / "m.joblib"), load(tmp_path / "m.pt")):
        assert loaded.multilabel_
        np.testing.assert_array_equal(loaded.predict_proba(A, X), clf.predict_proba(A, X))


def test_warm_start_needs_the_same_label_columns(multilabel):
    A, X, Y, split, Y_train = multilabel
    clf = VQGNNClassifier(**{**FAST, "max_epochs": 1, "warm_start": True}).fit(A, X, Y_train)
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(A, X, Y_train[:, :2])
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(A, X, np.where(split.train_mask, Y[:, 0], -1))
