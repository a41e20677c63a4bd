"""NodeFeatureTransformer: scikit-learn transformers as graph-aware pipeline steps."""

import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.inspection import permutation_importance
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, StandardScaler

from skvqgnn import Graph, VQGNNClassifier, VQGNNLinkPredictor, inference
from skvqgnn.preprocessing import NodeFeatureTransformer

FAST = dict(max_epochs=8, batch_size=100, n_codewords=16, learning_rate=0.01, random_state=0)


@pytest.fixture(scope="module")
def shifted(csbm):
    """conftest's graph with features far from zero mean and unit scale."""
    A, X, y, split = csbm
    return Graph(A, X * 40.0 + 25.0), y, split


def test_fits_on_the_views_nodes_and_transforms_every_node(shifted):
    G, y, split = shifted
    step = NodeFeatureTransformer(StandardScaler()).fit(G.nodes(split.train_idx))
    np.testing.assert_allclose(step.transformer_.mean_, G.X[split.train_idx].mean(0), rtol=1e-5)
    out = step.transform(G.nodes(split.test_idx))
    np.testing.assert_array_equal(out.index, split.test_idx)
    assert out.graph.A is G.A and out.graph.X.shape == G.X.shape
    np.testing.assert_allclose(out.graph.X, step.transformer_.transform(G.X), rtol=1e-5, atol=1e-5)
    # one transformed graph per source graph: the fit's and predict's views share it
    assert step.transform(G.nodes([0])).graph is out.graph


def test_a_pipeline_cross_validates_grid_searches_and_pickles(shifted, monkeypatch):
    G, y, split = shifted
    labelled = split.train_idx
    clf = VQGNNClassifier(**FAST)
    raw = cross_val_score(clf, G.nodes(labelled), y[labelled], cv=3).mean()
    pipe = make_pipeline(NodeFeatureTransformer(StandardScaler()), clf)
    scaled = cross_val_score(pipe, G.nodes(labelled), y[labelled], cv=3).mean()
    assert scaled > raw + 0.1  # features at scale 40 hurt; the step fixes them
    search = GridSearchCV(pipe, {"vqgnnclassifier__n_codewords": [8, 16]}, cv=2)
    search.fit(G.nodes(labelled), y[labelled])
    best = search.best_estimator_

    def refuse(*args, **kwargs):
        raise AssertionError("the pipeline's training graph was taken for a new graph")

    test = G.nodes(split.test_idx)
    again = pickle.loads(pickle.dumps(best))
    monkeypatch.setattr(inference, "assign_new_graph", refuse)
    pred = best.predict(test)
    assert np.mean(pred == y[split.test_idx]) > 0.7
    np.testing.assert_array_equal(again.predict(test), pred)


def test_sparse_features_and_pairs(csbm):
    A, X, y, split = csbm
    G = Graph(A, sp.csr_array(np.maximum(X, 0)))
    svd = NodeFeatureTransformer(TruncatedSVD(4, random_state=0)).fit(G.nodes())
    assert svd.transform(G.nodes([1, 2])).graph.X.shape == (G.n_nodes, 4)
    pairs = G.pairs([[0, 1], [2, 3]])
    lp = make_pipeline(NodeFeatureTransformer(MaxAbsScaler()), VQGNNLinkPredictor(**FAST))
    targets = np.array([1, 0])
    assert lp.fit(pairs, targets).predict_proba(pairs).shape == (2, 2)


def test_what_it_refuses(csbm):
    A, X, y, split = csbm
    with pytest.raises(TypeError, match="transforms the graph of a NodeSet or PairSet"):
        NodeFeatureTransformer(StandardScaler()).fit(X)
    step = NodeFeatureTransformer(StandardScaler()).fit(Graph(A, X).nodes())
    with pytest.raises(ValueError, match="fitted on 16"):
        step.transform(Graph(A, X[:, :5]).nodes())


def test_permutation_importance_says_why_it_cannot_take_a_view(csbm):
    A, X, y, split = csbm
    G = Graph(A, X)
    pipe = make_pipeline(NodeFeatureTransformer(StandardScaler()), VQGNNClassifier(**FAST))
    pipe.fit(G.nodes(split.train_idx), y[split.train_idx])
    with pytest.raises(TypeError, match="permute that column of graph.X"):
        permutation_importance(pipe, G.nodes(split.test_idx), y[split.test_idx], n_repeats=2)
