"""Pipeline steps over graphs: scikit-learn transformers applied to the node features of a view.

A scikit-learn transformer cannot take a ``NodeSet`` (a view has no array form: its nodes mean
nothing without their graph). :class:`NodeFeatureTransformer` wraps one so that it can stand in
a ``Pipeline`` before a graph estimator: it fits the transformer on the features of the view's
nodes (the training nodes of a fold, so nothing of the other folds' features is learnt) and
maps a view to the same nodes of a graph whose every node's features are transformed (messages
come from every node, so every node's features must be in the new space).
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from .graph import Graph, NodeSet, PairSet, _as_features

__all__ = ["NodeFeatureTransformer"]

_CHUNK = 8192  # rows of X transformed at once


class NodeFeatureTransformer(TransformerMixin, BaseEstimator):
    """Apply a scikit-learn transformer to the node features of a graph, inside a pipeline.

    Parameters
    ----------
    transformer : scikit-learn transformer
        Fitted (a clone of it) on the view's node features ``graph.X[nodes.index]``; its
        ``transform`` is then applied to the features of every node of the graph. It must
        accept the features as stored (a sparse ``X`` needs a transformer that takes sparse
        input, such as ``MaxAbsScaler`` or ``TruncatedSVD``).

    Attributes
    ----------
    transformer_ : scikit-learn transformer
        The fitted clone.
    n_features_in_ : int
        Feature columns of the graph it was fitted on.

    Notes
    -----
    The step keeps the transformed graph of the last source graph it saw (not pickled), so a
    pipeline's ``fit`` and its ``predict`` on views of the same graph share one transformed
    graph, and the estimator after the step finds its training graph's structures in that
    graph's cache. The features are float32, as every ``Graph``'s.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import MaxAbsScaler
    >>> from skvqgnn import Graph, VQGNNClassifier
    >>> from skvqgnn.datasets import make_csbm
    >>> from skvqgnn.preprocessing import NodeFeatureTransformer
    >>> A, X, y, split = make_csbm(n_nodes=200, n_classes=2, n_features=8, random_state=0)
    >>> G = Graph(A, X)
    >>> pipe = make_pipeline(
    ...     NodeFeatureTransformer(MaxAbsScaler()),
    ...     VQGNNClassifier(max_epochs=2, batch_size=50, n_codewords=8, random_state=0),
    ... )
    >>> pipe.fit(G.nodes(split.train_idx), y[split.train_idx]).predict(G.nodes([0, 1])).shape
    (2,)
    """

    def __init__(self, transformer: Any):
        self.transformer = transformer

    def fit(self, nodes: NodeSet, y: Any = None) -> NodeFeatureTransformer:
        """Fit a clone of ``transformer`` on the features of the view's nodes.

        Parameters
        ----------
        nodes : NodeSet
        y : ignored
            Passed on to the transformer's ``fit`` (supervised transformers use it).

        Returns
        -------
        self
        """
        graph = _graph_of(nodes)
        rows = np.unique(nodes.index) if isinstance(nodes, NodeSet) else np.unique(nodes.pairs)
        self.transformer_ = clone(self.transformer).fit(graph.X[rows], *([] if y is None else [y]))
        self.n_features_in_ = graph.n_features
        self._last = None  # (source graph, its transformed graph) of the last transform
        return self

    def transform(self, nodes: NodeSet) -> NodeSet:
        """The same nodes (or pairs) of a graph with every node's features transformed.

        Parameters
        ----------
        nodes : NodeSet or PairSet

        Returns
        -------
        NodeSet or PairSet
            A view of the transformed graph, with the same node ids.
        """
        check_is_fitted(self, "transformer_")
        graph = _graph_of(nodes)
        if graph.n_features != self.n_features_in_:
            raise ValueError(
                f"the graph has {graph.n_features} feature columns; this step was fitted on "
                f"{self.n_features_in_}"
            )
        last = getattr(self, "_last", None)
        if last is not None and last[0]() is graph:
            transformed = last[1]
        else:
            transformed = self._transformed(graph)
            self._last = (weakref.ref(graph), transformed)
        if isinstance(nodes, PairSet):
            return transformed.pairs(nodes.pairs)
        return transformed.nodes(nodes.index)

    def _transformed(self, graph: Graph) -> Graph:
        parts = []
        for start in range(0, graph.n_nodes, _CHUNK):  # bounded working memory
            parts.append(self.transformer_.transform(graph.X[start : start + _CHUNK]))
        X = sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.vstack(parts)
        return Graph._validated(graph.A, _as_features(X, graph.n_nodes))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_last", None)  # the transformed graph is rebuilt after unpickling
        return state

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.sparse = False
        tags.requires_fit = True
        return tags


def _graph_of(nodes: Any) -> Graph:
    if not isinstance(nodes, (NodeSet, PairSet)):
        raise TypeError(
            f"NodeFeatureTransformer transforms the graph of a NodeSet or PairSet, got "
            f"{type(nodes).__name__}; build one with Graph(A, X).nodes(idx)"
        )
    return nodes.graph
