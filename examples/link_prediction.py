"""Link prediction on Cora without leakage: edge split, fit, score, cross-validated grid search.

Held-out edges are removed from the message-passing graph by ``edge_split``; cross-validation
over ``PairSet`` views passes messages over each fold's own positive pairs only.
"""

from sklearn.model_selection import GridSearchCV

from skvqgnn import Graph, VQGNNLinkPredictor
from skvqgnn.datasets import load_cora
from skvqgnn.metrics import hits_at_50_scorer, hits_at_k, roc_auc
from skvqgnn.model_selection import edge_split


def main() -> None:
    A, X, _, _ = load_cora()
    train, val, test = edge_split(A, val=0.05, test=0.1, random_state=0)
    lp = VQGNNLinkPredictor(backbone="gcn", batch_size=A.shape[0] // 8, max_epochs=20)
    lp.set_params(random_state=0).fit(train.adjacency, X)
    scores = lp.decision_function(train.adjacency, X, test.pairs)
    print(
        f"test ROC AUC {roc_auc(test.targets, scores):.3f}, "
        f"Hits@50 {hits_at_k(test.targets, scores, 50):.3f}"
    )

    G = Graph(train.adjacency, X)
    search = GridSearchCV(
        lp.set_params(max_epochs=5), {"n_codewords": [32, 128]}, scoring=hits_at_50_scorer, cv=2
    )
    search.fit(G.pairs(train.pairs), train.targets)
    print(f"grid search: best {search.best_params_}, CV Hits@50 {search.best_score_:.3f}")
    best = search.best_estimator_
    print(f"refitted model, test ROC AUC {best.score(G.pairs(test.pairs), test.targets):.3f}")


if __name__ == "__main__":
    main()
