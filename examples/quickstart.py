"""Train VQ-GNN on Cora, predict, cross-validate over nodes, grid-search and save the model."""

import tempfile
from pathlib import Path

import joblib
import numpy as np
from sklearn.model_selection import GridSearchCV, cross_val_score

from skvqgnn import Graph, VQGNNClassifier
from skvqgnn.datasets import load_cora

A, X, y, split = load_cora()  # bundled with the package, works offline
clf = VQGNNClassifier(backbone="gcn", n_codewords=256, batch_size=512, random_state=0)
clf.fit(A, X, np.where(split.train_mask, y, -1))  # -1 = unlabelled
test_acc = (clf.transduction_[split.test_mask] == y[split.test_mask]).mean()
print(f"test accuracy {test_acc:.3f}; relative VQ error per layer {clf.vq_error_.round(3)}")

# Cross-validation and grid search split nodes, never the graph: X is a view of the graph's nodes.
G = Graph(A, X)
idx = np.flatnonzero(split.train_mask | split.val_mask)
small = VQGNNClassifier(max_epochs=20, learning_rate=0.01, random_state=0)
print("5-fold accuracy:", cross_val_score(small, G.nodes(idx), y[idx], cv=5).round(3))
search = GridSearchCV(small, {"n_codewords": [64, 256]}, cv=3).fit(G.nodes(idx), y[idx])
print("best n_codewords:", search.best_params_["n_codewords"])
print("held-out accuracy:", round(search.score(G.nodes(split.test_idx), y[split.test_idx]), 3))

# A saved model reloads anywhere and recognises its training graph by content.
with tempfile.TemporaryDirectory() as tmp:
    path = Path(tmp) / "model.joblib"
    joblib.dump(clf, path)
    assert np.array_equal(joblib.load(path).predict(A, X), clf.predict(A, X))
print("joblib round trip: identical predictions")
