"""The training loop shared by the estimators (``skvqgnn/_base.py``)."""

import copy

import numpy as np

from skvqgnn import VQGNNClassifier
from skvqgnn.layers import VQGNN
from skvqgnn.vq import AssignmentTable


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
