"""The training loop shared by the estimators (``skvqgnn/training.py``): its steps, callbacks,
task, snapshots and codebook updates."""

import copy

import numpy as np
import pytest
import torch

from skvqgnn import Callback, VQGNNClassifier, VQGNNLinkPredictor, training
from skvqgnn.layers import VQGNN
from skvqgnn.vq import AssignmentTable

FAST = dict(max_epochs=4, batch_size=100, n_codewords=16, hidden_layer_sizes=(16,), random_state=0)


class _Log(Callback):
    """Records the hooks called, in order."""

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = [], stop_after

    def on_fit_start(self, fit):
        self.calls.append("fit_start")

    def on_epoch_start(self, fit):
        self.calls.append(f"epoch_start {fit.epoch}")

    def on_step_start(self, fit, batch_nodes):
        self.calls.append("step_start")

    def on_step_end(self, fit, batch_nodes, n_terms):
        self.calls.append("step_end")

    def on_epoch_end(self, fit, record):
        self.calls.append(f"epoch_end {record['epoch']}")
        if self.stop_after is not None and fit.epoch + 1 == self.stop_after:
            fit.stop = True

    def on_fit_end(self, fit):
        self.calls.append("fit_end")


def test_callbacks_see_every_step_and_epoch_in_order(csbm):
    A, X, y, split = csbm
    log = _Log()
    clf = VQGNNClassifier(**{**FAST, "max_epochs": 2}).fit(A, X, y, callbacks=[log])
    steps = ["step_start", "step_end"] * 6  # 600 nodes in batches of 100
    assert log.calls == [
        "fit_start",
        *("epoch_start 0", *steps, "epoch_end 0"),
        *("epoch_start 1", *steps, "epoch_end 1"),
        "fit_end",
    ]
    assert clf.n_iter_ == 2


def test_a_callback_ends_a_fit_after_an_epoch(csbm):
    A, X, y, split = csbm
    clf = VQGNNClassifier(**FAST).fit(A, X, y, callbacks=[_Log(stop_after=2)])
    assert clf.n_iter_ == len(clf.history_) == 2


def test_callbacks_must_be_callbacks(csbm):
    A, X, y, split = csbm
    with pytest.raises(TypeError, match="Callback instances"):
        VQGNNClassifier(**FAST).fit(A, X, y, callbacks=[lambda fit: None])


@pytest.mark.parametrize("cls", [VQGNNClassifier, VQGNNLinkPredictor])
def test_a_fitted_estimator_holds_parameters_and_fitted_state_only(csbm, cls):
    """The task lives in the loop: after fit the estimator's ``__dict__`` has its parameters
    and ``_``-suffixed fitted attributes, nothing temporary."""
    A, X, y, split = csbm
    est = cls(**FAST)
    est.fit(A, X, y) if cls is VQGNNClassifier else est.fit(A, X)
    extra = [k for k in vars(est) if k not in est.get_params() and not k.endswith("_")]
    assert not extra


def test_the_loops_predictions_at_the_end_are_the_fits(csbm):
    """``FitLoop.predict`` (for callbacks) computes what ``fit`` ends with, on copies: the
    training goes on unchanged."""
    A, X, y, split = csbm
    labels = np.where(split.train_mask, y, -1)

    class Last(Callback):
        def on_epoch_end(self, fit, record):
            self.logits = fit.predict(np.arange(600))

    last = Last()
    clf = VQGNNClassifier(**FAST).fit(A, X, labels, callbacks=[last])
    plain = VQGNNClassifier(**FAST).fit(A, X, labels)
    np.testing.assert_array_equal(clf.predict_proba(A, X), plain.predict_proba(A, X))
    np.testing.assert_array_equal(clf.classes_[last.logits.argmax(1).numpy()], clf.transduction_)


def test_best_epoch_snapshots_copy_the_network_not_the_tables(csbm, monkeypatch):
    """Early stopping keeps the best epoch's network; its O(n) assignment tables are not
    deep-copied (the end of fit reassigns the feature codes from the kept network)."""
    A, X, y, split = csbm
    copied = []
    original = copy.deepcopy

    def spy(obj, memo=None, _nil=[]):  # noqa: B006 - copy.deepcopy's own signature
        copied.append(type(obj))
        return original(obj, memo)

    def refuse(self, memo):
        raise AssertionError("an assignment table was deep-copied")

    monkeypatch.setattr(copy, "deepcopy", spy)
    monkeypatch.setattr(AssignmentTable, "__deepcopy__", refuse, raising=False)
    clf = VQGNNClassifier(
        max_epochs=6, batch_size=100, n_codewords=16, early_stopping=True, random_state=0
    ).fit(A, X, np.where(split.train_mask, y, -1))
    assert any(issubclass(t, VQGNN) for t in copied)  # a snapshot was taken
    assert clf.tables_ and all(isinstance(t, AssignmentTable) for t in clf.tables_)


def test_gradient_moments_of_a_fit_start_from_its_first_batch(csbm):
    """After the first step the gradient standardiser holds the first batch's own moments
    (within a factor 2), not the variance 1 it is built with."""
    A, X, y, split = csbm
    labels = np.where(split.train_mask, y, -1)

    class FirstStep(Callback):
        def on_step_end(self, fit, batch_nodes, n_terms):
            if hasattr(self, "seen") or not n_terms:
                return
            self.seen = []
            last = len(fit.traces) - 1
            for level, (cb, trace) in enumerate(zip(fit.model.codebooks, fit.traces, strict=True)):
                g, _ = training.gradient_channels(trace)
                rows = np.arange(len(batch_nodes))
                if level == last:  # the output layer: the nodes with a loss term
                    rows = np.flatnonzero(labels[batch_nodes] >= 0)
                batch_var = cb.split(g[:, torch.from_numpy(rows)]).var(1)
                self.seen.append((batch_var, cb.grad_var.clone()))

    first = FirstStep()
    params = {**FAST, "max_epochs": 1, "hidden_layer_sizes": (16, 16)}
    VQGNNClassifier(**params).fit(A, X, labels, callbacks=[first])
    assert len(first.seen) == 2
    for batch_var, after in first.seen:
        assert float(batch_var.max()) < 1e-2  # real gradients are small
        ratio = after / batch_var.clamp_min(1e-30)
        used = batch_var > 0  # padded slice entries have no variance
        assert torch.all((ratio[used] > 0.5) & (ratio[used] < 2.0))
