"""``VQGNNClassifier``: semi-supervised node classification with VQ-GNN."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.metrics import accuracy_score, f1_score
from sklearn.utils import check_random_state
from torch import Tensor
from torch.nn import functional as F

from ._base import BaseVQGNN, resolve_graph
from .graph import Graph, NodeSet

__all__ = ["VQGNNClassifier"]


def _check_labels(y: Any, n: int, name: str = "y") -> np.ndarray:
    """``y`` as int64: (n,) class labels or, multi-label, an (n, n_labels) 0/1 indicator; -1
    marks an unlabelled node (or, in an indicator, an unknown entry)."""
    if sp.issparse(y):
        y = y.toarray()
    y = np.asarray(y)
    if y.ndim == 2:
        return _check_indicator(y, n, name)
    if y.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one label per node) or a 2-D (n_nodes, n_labels) 0/1 "
            f"indicator, got shape {y.shape}"
        )
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} entries but {n} nodes were given")
    if not np.issubdtype(y.dtype, np.number) or y.dtype == bool:
        raise ValueError(
            f"{name} must hold integer class labels (-1 = unlabelled), got dtype {y.dtype}; "
            "encode other labels with sklearn.preprocessing.LabelEncoder"
        )
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise ValueError(f"{name} must hold integer class labels (-1 = unlabelled)")
    y = y.astype(np.int64)
    if np.any(y < -1):
        raise ValueError(f"{name} holds labels < -1; use -1 for unlabelled nodes")
    return y


def _check_indicator(y: np.ndarray, n: int, name: str) -> np.ndarray:
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but {n} nodes were given")
    if y.shape[1] == 0:
        raise ValueError(f"{name} is a multi-label indicator with no label column")
    if y.dtype != bool and not np.issubdtype(y.dtype, np.number):
        raise ValueError(f"{name} must be a 0/1 indicator (-1 = unknown), got dtype {y.dtype}")
    if not np.all(np.isin(y, (-1, 0, 1))):
        raise ValueError(
            f"{name} is a 2-D multi-label indicator, so its entries must be 0 or 1 (-1 = "
            "unknown), got other values"
        )
    return y.astype(np.int64)


class VQGNNClassifier(ClassifierMixin, BaseVQGNN):
    """Node classifier trained in mini-batches with vector-quantised message passing (VQ-GNN).

    Every layer after the first keeps a product codebook of node-representation centroids.
    Messages between nodes of a mini-batch are exact; messages from the rest of the graph come from
    the senders' codewords, and the backward pass returns the gradient of the batch's messages to
    out-of-batch nodes through gradient codewords. No message is dropped, and the memory of a
    training step does not grow with the graph.

    Parameters
    ----------
    backbone : {"gcn", "sage", "gin", "gat", "transformer"} or Backbone, default="gcn"
        Graph convolution: GCN (``D̃^-½(A+I)D̃^-½``), GraphSAGE-mean (root weight + ``D⁻¹A``),
        GIN (``(1+ε)I + A``, learnable ``ε``, MLP update), GAT (multi-head attention over
        ``N(i) ∪ {i}``) or a graph transformer (local GCN plus global attention over all nodes
        in every layer). A ``skvqgnn.layers.Backbone`` instance plugs in a
        user-defined convolution (see ``doc/extending.md``).
    hidden_layer_sizes : int or sequence of int, default=(64,)
        Widths of the hidden layers; the network has ``len(hidden_layer_sizes) + 1`` layers.
    heads : int or None, default=None
        Attention heads of ``"gat"`` (hidden layers; concatenated, so the hidden widths must be
        divisible by it; the output layer has one head) and ``"transformer"``. ``None``: 8 for
        GAT, 1 for the transformer. Other backbones do not use it.
    n_codewords : int, default=256
        Codewords ``k`` per codebook slice; at most the number of nodes of the training graph
        in mini-batch mode (``fit`` raises a ValueError otherwise).
    codeword_dim : int or "auto", default="auto"
        Width ``D`` of a product-VQ slice; layer inputs are cut into ``ceil(f / D)`` slices, the
        last one zero-padded when ``D`` does not divide ``f``. At most the narrowest hidden
        width.
        ``"auto"``: 4 for backbones whose convolutions are fixed (gcn, sage, gin); whole-vector
        codewords for backbones with attention (gat, the transformer), whose attention scores
        are functions of a sender's whole vector, so a sender must be one codeword rather than
        one per slice. Attention backbones also keep a whole-vector codebook of the raw
        input features, from which the first layer reads the out-of-batch senders beyond its
        exact halo of at most ``batch_size`` nodes.
    batch_size : int or None, default=512
        Nodes per mini-batch. ``None`` trains on the full graph (exact, no codebooks): the
        in-package reference.
    sampler : {"cluster", "random"}, default="cluster"
        ``"cluster"`` joins ``parts_per_batch`` random METIS parts per batch, so most messages are
        intra-batch; ``"random"`` draws nodes uniformly.
    parts_per_batch : int, default=4
        METIS parts per batch for ``sampler="cluster"``.
    inference : {"vq", "exact"}, default="vq"
        ``"vq"``: mini-batch inference, out-of-batch messages from codewords. ``"exact"``:
        layer-wise full-neighbour inference over node chunks.
    backward_messages : {"auto", "codewords", "none"}, default="auto"
        Whether the backward pass adds the out-of-batch gradient messages (Eq. 7) from the
        gradient codewords, scaled by each codebook's measured trust ratio (the least-squares
        scale of the predicted against the true gradients of batch nodes, node by node and in
        sum, the smaller). ``"auto"``: through
        fixed convolutions (gcn, sage, gin, the transformer's GCN part) and not through
        attention (gat, the transformer's global attention), where they made the batch
        gradient worse from epoch 20 on and GAT fits worse at 2 hidden layers in every
        measured regime (``doc/gradient_codewords.md``).
    grad_scale : float, default=1.0
        Weight of the standardised gradient next to the standardised input in the distance
        that assigns nodes to gradient codewords (0: inputs only). The forward pass's feature
        codes use the inputs only.
    ema_decay : float, default=0.99
        Decay of the codebooks' exponential moving averages.
    dropout : float, default=0.5
        Dropout on every layer's input.
    attention_dropout : float, default=0.0
        Dropout on the attention weights of learnable convolutions (``"gat"``, the
        transformer's global attention, user ``AttentionConvolution`` s), as in GAT; a codeword
        term, which stands for several out-of-batch senders, is dropped or kept as a whole.
        The GAT paper's recipe is ``dropout=0.6, attention_dropout=0.6,
        learning_rate=0.005``: full-graph GAT on Cora reached 0.801 test accuracy with it and
        0.797 without attention dropout (3 seeds each).
    learning_rate : float, default=0.002
        Adam learning rate. With the default ``accumulate_batches="epoch"`` mini-batch and
        full-graph training take one step per epoch, so one rate serves both.
    weight_decay : float, default=5e-4
    accumulate_batches : int or "epoch", default="epoch"
        Mini-batches whose gradients are averaged into one optimiser step (gradient
        accumulation): an epoch of ``m = ceil(n / batch_size)`` batches takes
        ``ceil(m / accumulate_batches)`` steps, the last over the batches left. ``"epoch"``
        takes one step per epoch over the mean gradient of the epoch's batches, as many steps
        as full-graph training takes. It is the default because the codewords of the
        out-of-batch nodes are up to an epoch old: with a step per batch they lag the
        parameters by ``m`` steps, and at 2-3 hidden layers with random batches that lag made
        the loss spike or collapse; with one step per epoch the codewords describe the current
        parameters. The memory of a step does not change: each batch's
        graph is freed after its backward pass, and only the parameters' gradients add up. Not
        used in full-graph mode (one batch an epoch).
    max_epochs : int, default=200
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the labelled nodes (drawn afresh at every fit), stop
        after ``n_iter_no_change`` epochs without improvement of their accuracy (multi-label:
        micro-averaged F1) and keep the best epoch's model.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=20
    warm_start : bool, default=False
        Continue from the fitted model (and its codebooks on the same graph).
    device : str or torch.device, default="auto"
        ``"auto"`` uses CUDA when available. The fitted model is kept on the CPU, so a model
        trained on a GPU loads and predicts on a CPU-only machine.
    sparse_backend : {"auto", "torch", "torch_sparse"}, default="auto"
        Sparse kernels: ``torch.sparse``, or the optional ``torch-sparse`` package when installed.
    random_state : int, RandomState instance or None, default=None
        Seeds batches, METIS, initialisation and dropout. CPU runs are bit-reproducible with one
        thread; with several, multi-threaded kernels may change the last bits of the outputs.
    verbose : int, default=0
        Show a progress bar over epochs.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels (without -1); multi-label: the label columns ``0 .. n_labels - 1``.
    multilabel_ : bool
        Whether ``y`` was a 2-D indicator: then the output layer has one sigmoid unit per label
        and the loss is the binary cross-entropy over the known entries.
    n_features_in_ : int
    transduction_ : ndarray of shape (n_nodes,) or (n_nodes, n_labels)
        Predicted label (multi-label: indicator row) of every node of the training graph.
    history_ : list of dict
        Per epoch: ``loss``, ``time``, ``val_score`` (with early stopping) and, per VQ layer,
        ``vq_error``, ``assignments_changed``, ``codewords_reseeded``, ``codeword_shift``,
        ``grad_codeword_norm``, ``blue_message_norm`` and ``grad_trust`` (the scale applied to
        the backward messages).
    vq_error_ : ndarray of shape (n_vq_layers,)
        Relative VQ error ``‖X − R X̃‖_F / ‖X‖_F`` of each quantised layer input over the last
        epoch (empty for full-graph training).
    n_iter_ : int
        Epochs run.
    model_ : torch.nn.Module
        The trained network with its codebooks (on the CPU).

    See Also
    --------
    skvqgnn.Graph : the graph container whose ``nodes`` views are the ``X`` of cross-validation.

    Examples
    --------
    >>> import numpy as np
    >>> from skvqgnn import VQGNNClassifier
    >>> from skvqgnn.datasets import load_cora
    >>> A, X, y, split = load_cora()
    >>> clf = VQGNNClassifier(max_epochs=5, random_state=0)
    >>> clf = clf.fit(A, X, np.where(split.train_mask, y, -1))
    >>> clf.predict(A, X).shape
    (2708,)
    """

    _n_outputs: int
    _n_targets: int

    def _loss(self, logits: Tensor, nodes: Tensor) -> tuple[Tensor, int]:
        # the targets stay on the host; the batch's node ids may be on the training device
        targets = self._targets[nodes.cpu()].to(logits.device)
        mask = targets >= 0
        count = int(mask.sum())
        if count == 0:
            return logits.sum() * 0.0, 0
        if self.multilabel_:
            loss = F.binary_cross_entropy_with_logits(
                logits[mask], targets[mask].to(logits.dtype), reduction="sum"
            )
            return loss, count
        return F.cross_entropy(logits[mask], targets[mask], reduction="sum"), count

    def _val_score(self, logits: Tensor, nodes: np.ndarray) -> float:
        if self.multilabel_:
            known = self._val_labels >= 0
            predicted = (logits.numpy() > 0).astype(np.int64)
            return f1_score(self._val_labels[known], predicted[known], average="micro")
        return accuracy_score(self._val_labels, logits.argmax(1).numpy())

    def _labels_of(self, logits: Tensor) -> np.ndarray:
        if self.multilabel_:
            return (logits.numpy() > 0).astype(np.int64)
        return self.classes_[logits.argmax(1).numpy()]

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, A: Any, X: Any = None, y: Any = None) -> VQGNNClassifier:
        """Fit on a graph: ``fit(A, X, y)`` or ``fit(nodes, y)``.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), or NodeSet
            Adjacency, or a ``NodeSet`` view (then the second argument is ``y``, one label per
            node of the view, and every other node of the graph is unlabelled).
        X : array-like or sparse matrix of shape (n_nodes, n_features)
            Node features (when ``A`` is an adjacency).
        y : array-like of shape (n_nodes,) or (n_nodes, n_labels)
            Integer class labels, ``-1`` for unlabelled nodes; or a multi-label 0/1 indicator
            (dense or sparse), ``-1`` for an unknown entry (a row of -1: unlabelled node).

        Returns
        -------
        self
        """
        nodes, is_view = resolve_graph(A, None if isinstance(A, NodeSet) else X)
        if is_view and y is None:
            y = X
        if y is None:
            raise TypeError("fit needs the labels y")
        graph = nodes.graph
        y_view = _check_labels(y, len(nodes))
        multilabel = y_view.ndim == 2
        labels = np.full((graph.n_nodes, *y_view.shape[1:]), -1, dtype=np.int64)
        labels[nodes.index] = y_view
        labelled = np.flatnonzero((labels >= 0).reshape(graph.n_nodes, -1).any(1))
        if len(labelled) == 0:
            raise ValueError("y has no labelled node: every entry is -1")
        self._hidden_sizes()
        rs = check_random_state(self.random_state)
        seed = int(rs.randint(np.iinfo(np.int32).max))
        val_nodes = np.zeros(0, dtype=np.int64)
        if self.early_stopping:
            n_val = max(1, int(round(self.validation_fraction * len(labelled))))
            if n_val >= len(labelled):
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} leaves no labelled node to "
                    f"train on ({len(labelled)} labelled)"
                )
            val_nodes = np.sort(rs.choice(labelled, n_val, replace=False))
        if multilabel:
            classes = np.arange(labels.shape[1])
        else:
            classes = np.unique(labels[labelled])
        if (
            self.warm_start
            and hasattr(self, "classes_")
            and (multilabel != self.multilabel_ or not np.array_equal(classes, self.classes_))
        ):
            raise ValueError(
                "warm_start=True needs the same classes (or label columns) as the previous fit"
            )
        if not multilabel and len(classes) < 2:
            raise ValueError(f"y must contain at least 2 classes, got {classes.tolist()}")
        self.classes_ = classes
        self.multilabel_ = multilabel
        self.n_features_in_ = graph.n_features
        if multilabel:
            encoded = labels.copy()
        else:
            encoded = np.full(graph.n_nodes, -1, dtype=np.int64)
            encoded[labelled] = np.searchsorted(classes, labels[labelled])
        self._val_labels = encoded[val_nodes]
        encoded[val_nodes] = -1
        self._targets = torch.from_numpy(encoded)
        self._loss_mask = (encoded >= 0).reshape(graph.n_nodes, -1).any(1)
        self._n_outputs = len(classes)
        self._n_targets = int((encoded >= 0).sum())
        with torch.random.fork_rng(devices=[]):
            self._fit_graph(nodes, val_nodes, seed)
        del self._targets, self._val_labels, self._loss_mask
        self.transduction_ = self._labels_of(self._decision(graph.nodes()))
        return self

    def decision_function(self, A: Any, X: Any = None) -> np.ndarray:
        """Logits (n, n_classes), or (n, n_labels) multi-label, for ``(A, X)`` or ``nodes``.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, or NodeSet
            Adjacency of the graph to predict on (the training graph, the training graph with
            new nodes, or another graph), or a ``Graph`` or ``NodeSet`` view (then ``X`` is
            not given, and the rows are the view's nodes).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (n, n_classes) or (n, n_labels)
            One row per node of the graph, or of the view.
        """
        nodes, _ = resolve_graph(A, X)
        return self._decision(nodes).numpy()

    def predict_proba(self, A: Any, X: Any = None) -> np.ndarray:
        """Class probabilities (n, n_classes), softmax; multi-label: per-label probabilities
        (n, n_labels), sigmoid.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, or NodeSet
            Adjacency of the graph to predict on (the training graph, the training graph with
            new nodes, or another graph), or a ``Graph`` or ``NodeSet`` view (then ``X`` is
            not given, and the rows are the view's nodes).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (n, n_classes) or (n, n_labels)
            Columns in the order of ``classes_``.
        """
        nodes, _ = resolve_graph(A, X)
        logits = self._decision(nodes)
        if self.multilabel_:
            return torch.sigmoid(logits).numpy()
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, A: Any, X: Any = None) -> np.ndarray:
        """Class of every node of ``(A, X)``, or of the nodes of a ``NodeSet``; multi-label: the
        (n, n_labels) 0/1 indicator of the labels whose probability exceeds 0.5.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, or NodeSet
            Adjacency of the graph to predict on (the training graph, the training graph with
            new nodes, or another graph), or a ``Graph`` or ``NodeSet`` view (then ``X`` is
            not given, and the rows are the view's nodes).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (n,) or (n, n_labels)
            Labels from ``classes_``, or the multi-label indicator.
        """
        nodes, _ = resolve_graph(A, X)
        return self._labels_of(self._decision(nodes))

    def score(self, A: Any, X: Any = None, y: Any = None) -> float:
        """Accuracy (multi-label: subset accuracy): ``score(nodes, y)`` or ``score(A, X, y)``.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, or NodeSet
            Adjacency, or a ``Graph`` or ``NodeSet`` (then the second argument is ``y``).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.
        y : array-like of shape (n,) or (n, n_labels), default=None
            True labels of the nodes scored (every node of ``(A, X)``, or the view's nodes).

        Returns
        -------
        float
            The fraction of nodes whose predicted label (multi-label: whole indicator row)
            equals ``y``.
        """
        if isinstance(A, (NodeSet, Graph)) and y is None:
            y = X
            X = None
        return accuracy_score(y, self.predict(A, X))
