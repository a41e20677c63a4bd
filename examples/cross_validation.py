"""Cross-validate a VQ-GNN node classifier over the labelled nodes of Cora.

The graph is built once, ``G = Graph(A, X)``, and scikit-learn gets a view of its labelled nodes,
``G.nodes(idx)``: it splits the nodes, never the graph. Each fold trains on the whole graph with
only its training nodes labelled (the others are -1) and is scored on its held-out nodes. The
Cora test nodes stay out of the cross-validation and score the final model.
"""

import time

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_score

from skvqgnn import Graph, VQGNNClassifier
from skvqgnn.datasets import load_cora


def main() -> None:
    A, X, y, split = load_cora()
    G = Graph(A, X)
    labelled = np.flatnonzero(split.train_mask | split.val_mask)
    clf = VQGNNClassifier(n_codewords=64, max_epochs=20, learning_rate=0.01, random_state=0)

    start = time.perf_counter()
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    scores = cross_val_score(clf, G.nodes(labelled), y[labelled], cv=cv)
    print(
        f"5-fold cross-validated accuracy {scores.mean():.3f} ± {scores.std():.3f} "
        f"over {len(labelled)} labelled nodes ({time.perf_counter() - start:.1f} s)"
    )

    clf.fit(G.nodes(labelled), y[labelled])
    test_accuracy = clf.score(G.nodes(split.test_idx), y[split.test_idx])
    print(f"trained on all {len(labelled)}: test accuracy {test_accuracy:.3f}")


if __name__ == "__main__":
    main()
