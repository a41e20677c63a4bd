"""Train VQ-GNN on Cora, predict, and save the model.

More in this folder: cross_validation.py (cross-validation over nodes), grid_search.py,
save_and_load.py (joblib and the weights-only format), link_prediction.py, large_graph.py and
custom_backbone.py.
"""

import tempfile
from pathlib import Path

import joblib
import numpy as np

from skvqgnn import VQGNNClassifier
from skvqgnn.datasets import load_cora

A, X, y, split = load_cora()  # bundled with the package, works offline
clf = VQGNNClassifier(backbone="gcn", n_codewords=256, batch_size=512, random_state=0)
clf.fit(A, X, np.where(split.train_mask, y, -1))  # -1 = unlabelled
test_acc = (clf.transduction_[split.test_mask] == y[split.test_mask]).mean()
print(f"test accuracy {test_acc:.3f}; relative VQ error per layer {clf.vq_error_.round(3)}")

# predict() on the training graph reuses the stored assignments: same answer as transduction_
assert np.array_equal(clf.predict(A, X), clf.transduction_)

# A saved model reloads anywhere and recognises its training graph by content.
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "model.joblib"
    joblib.dump(clf, path)
    assert np.array_equal(joblib.load(path).predict(A, X), clf.predict(A, X))
print("joblib round trip: identical predictions")
