"""Ctrl-C during fit: the model trained so far is kept, usable, and a warning says so."""

import numpy as np
import pytest

from skvqgnn import Callback, VQGNNClassifier, VQGNNLinkPredictor

# one optimiser step per batch, so that a few epochs train the model
FAST = dict(
    batch_size=100,
    n_codewords=16,
    hidden_layer_sizes=(16,),
    learning_rate=0.01,
    accumulate_batches=1,
    random_state=0,
)


class _InterruptAt(Callback):
    """Raise KeyboardInterrupt (what Ctrl-C raises) at the end of training step ``step``."""

    def __init__(self, step):
        self.step, self.n = step, 0

    def on_step_end(self, fit, batch_nodes, n_terms):
        self.n += 1
        if self.n == self.step:
            raise KeyboardInterrupt


def test_interrupted_fit_keeps_the_model_and_says_so(csbm):
    A, X, y, split = csbm
    labels = np.where(split.train_mask, y, -1)
    steps_per_epoch = 6  # 600 nodes, batches of 100
    stop = _InterruptAt(3 * steps_per_epoch + 2)  # inside the 4th epoch
    clf = VQGNNClassifier(max_epochs=50, **FAST)
    said = "interrupted after 3 epochs; keeping the model as it"
    with pytest.warns(RuntimeWarning, match=said) as seen:
        clf.fit(A, X, labels, callbacks=[stop])
    assert seen[0].filename == __file__  # the warning points at the call of fit
    assert clf.n_iter_ == 3 and len(clf.history_) == 3
    pred = clf.predict(A, X)
    assert pred.shape == y.shape and clf.transduction_.shape == y.shape
    assert (pred[split.test_mask] == y[split.test_mask]).mean() > 0.5  # trained, not random
    # it predicts like a model trained for 3 epochs (it has 2 more steps)
    ref = VQGNNClassifier(max_epochs=3, **FAST).fit(A, X, labels)
    assert (ref.predict(A, X) == pred).mean() > 0.8


def test_interrupted_fit_with_early_stopping_keeps_the_best_epoch(csbm):
    A, X, y, split = csbm
    labels = np.where(split.train_mask | split.val_mask, y, -1)
    stop = _InterruptAt(6 * 8 + 1)  # first step of the 9th epoch
    clf = VQGNNClassifier(max_epochs=50, early_stopping=True, n_iter_no_change=50, **FAST)
    with pytest.warns(RuntimeWarning, match="of the best validation epoch"):
        clf.fit(A, X, labels, callbacks=[stop])
    scores = [h["val_score"] for h in clf.history_]
    assert len(scores) == 8 and clf.n_iter_ == 8
    assert clf.predict(A, X).shape == y.shape


def test_interrupted_link_fit_keeps_the_model(csbm):
    A, X, _, _ = csbm
    stop = _InterruptAt(8)
    lp = VQGNNLinkPredictor(max_epochs=50, **FAST)
    with pytest.warns(RuntimeWarning, match="interrupted after 1 epochs"):
        lp.fit(A, X, callbacks=[stop])
    assert lp.n_iter_ == 1
    scores = lp.decision_function(A, X, np.array([[0, 1], [2, 3]]))
    assert np.isfinite(scores).all()
