"""Choose the number of codewords of a VQ-GNN classifier with GridSearchCV on Cora.

Candidates are compared by 3-fold cross-validation over the labelled nodes (a ``NodeSet`` view
of one shared ``Graph``), the best is refitted on all of them and scored on the test nodes.
"""

import time

import numpy as np
from sklearn.model_selection import GridSearchCV

from skvqgnn import Graph, VQGNNClassifier
from skvqgnn.datasets import load_cora


def main() -> None:
    A, X, y, split = load_cora()
    G = Graph(A, X)
    labelled = np.flatnonzero(split.train_mask | split.val_mask)
    clf = VQGNNClassifier(max_epochs=10, learning_rate=0.01, random_state=0)

    start = time.perf_counter()
    search = GridSearchCV(clf, {"n_codewords": [16, 64, 256]}, cv=3)
    search.fit(G.nodes(labelled), y[labelled])
    print(f"grid search: {time.perf_counter() - start:.1f} s")
    for k, score, fit_time in zip(
        search.cv_results_["param_n_codewords"],
        search.cv_results_["mean_test_score"],
        search.cv_results_["mean_fit_time"],
        strict=True,
    ):
        print(f"  n_codewords={k:<4} CV accuracy {score:.3f}, fit {fit_time:.1f} s")
    print(f"best {search.best_params_}, CV accuracy {search.best_score_:.3f}")
    test_accuracy = search.score(G.nodes(split.test_idx), y[split.test_idx])
    print(f"refitted on all {len(labelled)} labelled nodes: test accuracy {test_accuracy:.3f}")


if __name__ == "__main__":
    main()
