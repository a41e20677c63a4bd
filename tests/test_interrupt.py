"""Ctrl-C during fit: the model trained so far is kept, usable, and a warning says so."""

import numpy as np
import pytest

import skvqgnn._base as base
from skvqgnn import VQGNNClassifier, VQGNNLinkPredictor

# one optimiser step per batch, so that a few epochs train the model
FAST = dict(
    batch_size=100,
    n_codewords=16,
    hidden_layer_sizes=(16,),
    learning_rate=0.01,
    accumulate_batches=1,
    random_state=0,
)


def _interrupt_at_step(monkeypatch, step):
    """Raise KeyboardInterrupt (what Ctrl-C raises) at the end of training step ``step``, in
    its codebook update (which runs once per training step, never at inference)."""
    calls = {"n": 0}
    update = base.BaseVQGNN._update_codebooks

    def interrupting(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return update(self, *args, **kwargs)

    monkeypatch.setattr(base.BaseVQGNN, "_update_codebooks", interrupting)


def test_interrupted_fit_keeps_the_model_and_says_so(csbm, monkeypatch):
    A, X, y, split = csbm
    labels = np.where(split.train_mask, y, -1)
    steps_per_epoch = 6  # 600 nodes, batches of 100
    _interrupt_at_step(monkeypatch, 3 * steps_per_epoch + 2)  # inside the 4th epoch
    clf = VQGNNClassifier(max_epochs=50, **FAST)
    with pytest.warns(RuntimeWarning, match="interrupted after 3 epochs; keeping the model as it"):
        clf.fit(A, X, labels)
    assert clf.n_iter_ == 3 and len(clf.history_) == 3
    pred = clf.predict(A, X)
    assert pred.shape == y.shape and clf.transduction_.shape == y.shape
    assert (pred[split.test_mask] == y[split.test_mask]).mean() > 0.5  # trained, not random
    monkeypatch.undo()
    # it predicts like a model trained for 3 epochs (it has 2 more steps)
    ref = VQGNNClassifier(max_epochs=3, **FAST).fit(A, X, labels)
    assert (ref.predict(A, X) == pred).mean() > 0.8


def test_interrupted_fit_with_early_stopping_keeps_the_best_epoch(csbm, monkeypatch):
    A, X, y, split = csbm
    labels = np.where(split.train_mask | split.val_mask, y, -1)
    _interrupt_at_step(monkeypatch, 6 * 8 + 1)  # first step of the 9th epoch
    clf = VQGNNClassifier(max_epochs=50, early_stopping=True, n_iter_no_change=50, **FAST)
    with pytest.warns(RuntimeWarning, match="of the best validation epoch"):
        clf.fit(A, X, labels)
    scores = [h["val_score"] for h in clf.history_]
    assert len(scores) == 8 and clf.n_iter_ == 8
    assert clf.predict(A, X).shape == y.shape


def test_interrupted_link_fit_keeps_the_model(csbm, monkeypatch):
    A, X, _, _ = csbm
    _interrupt_at_step(monkeypatch, 8)
    lp = VQGNNLinkPredictor(max_epochs=50, **FAST)
    with pytest.warns(RuntimeWarning, match="interrupted after 1 epochs"):
        lp.fit(A, X)
    assert lp.n_iter_ == 1
    scores = lp.decision_function(A, X, np.array([[0, 1], [2, 3]]))
    assert np.isfinite(scores).all()
