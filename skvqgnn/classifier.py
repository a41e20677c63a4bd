"""``VQGNNClassifier``: semi-supervised node classification with VQ-GNN."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.exceptions import DataConversionWarning
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import check_is_fitted
from torch import Tensor
from torch.nn import functional as F

from ._base import BaseVQGNN, _check_not_empty, resolve_graph, view_arguments
from .distributed import resolve_strategy
from .graph import NodeSet, _node_index, has_repeats
from .layers import Backbone
from .shards import GraphShard
from .training import Task, rank_seed

__all__ = ["VQGNNClassifier"]


def _is_unlabelled(values: np.ndarray) -> np.ndarray:
    """Which entries of an object array of labels mark an unlabelled node: ``None``, NaN or
    pandas' ``NA`` (a nullable integer column arrives so)."""
    return np.array(
        [
            v is None or (isinstance(v, float) and v != v) or type(v).__name__ == "NAType"
            for v in values
        ],
        dtype=bool,
    )


_LABEL_ROWS = 1 << 16  # rows of logits turned into labels at once


def _labelled(y: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Which entries of 1-D labels ``y`` are labels, not the unlabelled marker.

    A masked array's mask marks the unlabelled nodes and every other value is a label (-1
    too, and in dtypes such as uint8 that cannot hold -1); otherwise ``-1`` (integers and
    floats), NaN (floats) and ``None``/NaN/``NA`` (objects) mark them."""
    if y.dtype == object:
        known = ~_is_unlabelled(y)
    elif y.dtype == bool or y.dtype.kind in "US":
        known = np.ones(len(y), dtype=bool)
    elif np.issubdtype(y.dtype, np.floating):
        known = ~np.isnan(y) if mask is not None else ~np.isnan(y) & (y != -1)
    else:
        known = np.ones(len(y), dtype=bool) if mask is not None else y != -1
    return known if mask is None else known & ~mask


def _check_labels(y: Any, n: int, name: str = "y") -> tuple[np.ndarray, np.ndarray | None]:
    """``y`` as int64 codes and its classes.

    Class labels (n,) may be integers (``-1`` = unlabelled), integer-valued floats (``-1`` or
    NaN = unlabelled), booleans, strings or objects (``None``, NaN or pandas' ``NA`` =
    unlabelled; pandas categoricals arrive so), or a masked array of any of these whose mask
    marks the unlabelled nodes (then every value is a label, -1 included). They come back as
    codes into the sorted classes, ``-1`` where unlabelled, and the classes in the user's own
    values. A column vector (n, 1) is read as class labels, with a warning, as scikit-learn
    does. A multi-label 0/1 indicator (n, n_labels), ``-1`` (or masked) = unknown entry,
    comes back as it is, with ``None`` for the classes."""
    if sp.issparse(y):
        y = y.toarray()
    mask = None
    if isinstance(y, np.ma.MaskedArray):  # (np.ma.getdata would read pandas' private _data)
        y, mask = y.data, np.ma.getmaskarray(y)
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(
            f"A column-vector {name} was passed when a 1d array was expected. Please change the "
            "shape of y to (n_samples, ), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        y = y.ravel()
        mask = None if mask is None else mask.ravel()
    if y.ndim == 2:
        if mask is not None and mask.any():
            y = np.where(mask, -1, y.astype(np.int64) if y.dtype.kind in "ub" else y)
        return _check_indicator(y, n, name), None
    if y.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D (one label per node) or a 2-D (n_nodes, n_labels) 0/1 "
            f"indicator, got shape {y.shape}"
        )
    if len(y) != n:
        raise ValueError(f"{name} has {len(y)} entries but {n} nodes were given")
    if (
        y.dtype != object
        and y.dtype.kind not in "USb"
        and (not np.issubdtype(y.dtype, np.number) or np.iscomplexobj(y))
    ):
        raise ValueError(
            f"{name} must hold class labels (integers with -1 = unlabelled, or strings, "
            f"booleans or objects with None = unlabelled), got dtype {y.dtype}"
        )
    known = _labelled(y, mask)
    if np.issubdtype(y.dtype, np.floating) and not (
        np.all(np.isfinite(y[known])) and np.all(y[known] == np.round(y[known]))
    ):
        raise ValueError(
            f"Unknown label type: {name} holds continuous values; {name} must hold integer "
            "class labels (-1 or NaN = unlabelled); a float array must hold whole numbers"
        )
    if np.issubdtype(y.dtype, np.number) and mask is None and np.any(y[known] < -1):
        raise ValueError(f"{name} holds labels < -1; use -1 for unlabelled nodes")
    try:
        classes, codes = np.unique(y[known], return_inverse=True)
    except TypeError as exc:
        raise ValueError(
            f"{name} mixes labels of types that cannot be ordered "
            f"({sorted({type(v).__name__ for v in y[known]})}); give every class label "
            "the same type (None marks an unlabelled node)"
        ) from exc
    if np.issubdtype(y.dtype, np.floating):
        classes = classes.astype(np.int64)
    out = np.full(len(y), -1, dtype=np.int64)
    out[known] = codes.ravel()
    return out, classes


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


def _given_validation(
    given: Any, nodes: NodeSet, labels: np.ndarray, n_labelled: int
) -> np.ndarray:
    """The graph's node ids of ``fit``'s ``validation_nodes``, checked: labelled, not all."""
    index = np.asarray(given)
    if index.dtype == bool and index.shape != (len(nodes),):
        raise ValueError(
            f"validation_nodes as a boolean mask must have shape ({len(nodes)},), one entry "
            f"per label, got {index.shape}"
        )
    try:
        positions = _node_index(index, len(nodes))
    except IndexError as exc:
        raise ValueError(f"validation_nodes: {exc}") from None
    val = np.unique(nodes.index[positions])
    if len(val) == 0:
        raise ValueError("validation_nodes is empty")
    unlabelled = val[(labels[val] < 0).reshape(len(val), -1).all(1)]
    if len(unlabelled):
        raise ValueError(
            f"validation_nodes holds {len(unlabelled)} unlabelled node(s) (first: "
            f"{unlabelled[0]}); a validation node needs a label to be scored"
        )
    if len(val) >= n_labelled:
        raise ValueError("validation_nodes holds every labelled node: none is left to train on")
    return val


def _code_dtype(n_outputs: int) -> np.dtype:
    """The smallest signed integer type that holds -1 and the codes ``0 .. n_outputs - 1``."""
    return np.min_scalar_type(-max(n_outputs, 1))


class NodeClassification(Task):
    """The classifier's task: cross-entropy (or, multi-label, binary cross-entropy per label)
    on the labelled training nodes, accuracy (micro F1) on the validation nodes.

    Parameters
    ----------
    targets : ndarray of shape (n_nodes,) or (n_nodes, n_labels), int64
        Codes into ``classes_`` (multi-label: the 0/1 indicator); -1 where a node (or label)
        is not a training target, the validation nodes included.
    val_labels : ndarray
        Codes of the validation nodes, in the order the loop scores them.
    n_outputs : int
        Number of classes (multi-label: of labels).
    multilabel : bool
    node_weights : Tensor of shape (n_nodes,) or None
        Per-node weights of the loss terms (``sample_weight`` times ``class_weight``, mean 1
        over the training nodes); ``None``: all 1.
    """

    def __init__(
        self,
        targets: np.ndarray,
        val_labels: np.ndarray,
        n_outputs: int,
        multilabel: bool,
        node_weights: Tensor | None = None,
    ):
        n = len(targets)
        # held as the smallest signed integers that take -1 and every code (int8 below 128
        # outputs): the targets are O(n), a partitioned process holds every node's
        self.targets = torch.from_numpy(targets.astype(_code_dtype(n_outputs), copy=False))
        self.val_labels = val_labels
        self.multilabel = multilabel
        self.node_weights = node_weights
        self.loss_mask = (targets >= 0).reshape(n, -1).any(1)
        self.n_outputs = n_outputs
        self.n_targets = int((targets >= 0).sum())

    def loss(self, logits: Tensor, nodes: Tensor) -> tuple[Tensor, int]:  # noqa: D102
        # the targets stay on the host; the batch's node ids may be on the training device
        targets = self.targets[nodes.cpu()].to(logits.device, torch.long)
        mask = targets >= 0
        count = int(mask.sum())
        if count == 0:
            return logits.sum() * 0.0, 0
        weights = None
        if self.node_weights is not None:
            weights = self.node_weights[nodes.cpu()].to(logits.device)
        if self.multilabel:
            terms = F.binary_cross_entropy_with_logits(
                logits[mask], targets[mask].to(logits.dtype), reduction="none"
            )
            if weights is not None:
                terms = terms * weights.unsqueeze(1).expand_as(mask)[mask]
            return terms.sum(), count
        terms = F.cross_entropy(logits[mask], targets[mask], reduction="none")
        if weights is not None:
            terms = terms * weights[mask]
        return terms.sum(), count

    def val_score(self, logits: Tensor, nodes: np.ndarray) -> float:  # noqa: D102
        if self.multilabel:
            known = self.val_labels >= 0
            predicted = (logits.numpy() > 0).astype(np.int64)
            return f1_score(self.val_labels[known], predicted[known], average="micro")
        return accuracy_score(self.val_labels, logits.argmax(1).numpy())


def _class_index(logits: Tensor) -> Tensor:
    """The most probable class of each row, in the smallest integer type that holds it."""
    index = logits.argmax(1)
    for dtype in (torch.int8, torch.int16, torch.int32):
        if logits.shape[1] <= torch.iinfo(dtype).max:
            return index.to(dtype)
    return index


def _positive(logits: Tensor) -> Tensor:
    """Multi-label: whether each label's logit is positive (its probability above 0.5)."""
    return logits > 0


class VQGNNClassifier(ClassifierMixin, BaseVQGNN):
    """Node classifier trained in mini-batches with vector-quantised message passing (VQ-GNN).

    Every layer after the first keeps a product codebook of node-representation centroids.
    Messages between nodes of a mini-batch are exact; messages from the rest of the graph come from
    the senders' codewords, and the backward pass returns the gradient of the batch's messages to
    out-of-batch nodes through gradient codewords. No message is dropped, and the memory of a
    training step does not grow with the graph.

    Parameters
    ----------
    backbone : {"gcn", "sage", "gin", "gat", "transformer", "gcnii"} or Backbone, default="gcn"
        Graph convolution: GCN (``D̃^-½(A+I)D̃^-½``), GraphSAGE-mean (root weight + ``D⁻¹A``),
        GIN (``(1+ε)I + A``, learnable ``ε``, MLP update), GAT (multi-head attention over
        ``N(i) ∪ {i}``), a graph transformer (local GCN plus global attention over all nodes
        in every layer) or GCNII (GCN propagation with an initial residual and identity
        mapping, for deeper stacks: one propagation per hidden layer, equal widths). A
        ``skvqgnn.layers.Backbone`` instance plugs in a user-defined convolution (see
        ``doc/extending.md``).
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
        ``"cluster"`` joins ``parts_per_batch`` random graph parts (``partitioner``) per batch, so
        most messages are intra-batch; ``"random"`` draws nodes uniformly.
    parts_per_batch : int, default=4
        Graph parts per batch for ``sampler="cluster"``.
    partitioner : {"metis", "label_propagation", "contiguous"}, default="metis"
        How ``sampler="cluster"`` cuts the graph into parts. ``"metis"``: METIS k-way (the
        most edges inside parts); its memory, about 250 bytes per node and 140 per stored
        adjacency entry, is what limits the largest graph a fit holds. ``"label_propagation"``:
        size-capped label propagation, linear in memory (a fraction of METIS's) and faster,
        with fewer edges inside parts (``doc/benchmarks/memory_stages.md``): for graphs METIS
        cannot hold. ``"contiguous"``: ranges of consecutive node ids, at no cost, as local
        as the node order: for graphs stored with neighbours at nearby ids, and features
        memory-mapped from disk, whose batches then read a few stretches of the file
        (``doc/howto/scaling_up.md``).
    inference : {"vq", "exact"}, default="vq"
        ``"vq"``: mini-batch inference, out-of-batch messages from codewords. ``"exact"``:
        layer-wise full-neighbour inference over node chunks.
    backward_messages : {"auto", "codewords", "none"}, default="auto"
        Whether the backward pass adds the out-of-batch gradient messages (Eq. 7) from the
        gradient codewords, scaled by each codebook's measured trust ratio (the least-squares
        scale of the predicted against the true gradients of batch nodes, node by node and in
        sum, the smaller). ``"auto"``: through the convolution kinds that default to them,
        fixed convolutions (gcn, sage, gin, the transformer's GCN part), and not through
        attention (gat, the transformer's global attention), where they made the batch
        gradient worse (``doc/gradient_codewords.md``).
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
        learning_rate=0.005``.
    learning_rate : float, default=0.002
        Adam learning rate. With the default ``accumulate_batches="epoch"`` mini-batch and
        full-graph training take one step per epoch, so one rate serves both.
    weight_decay : float, default=5e-4
    class_weight : dict, "balanced" or None, default=None
        Weight of each class in the loss, as in scikit-learn: ``{label: weight}`` (classes not
        listed weigh 1) or ``"balanced"``, ``n / (n_classes · count)`` over the training
        labels, so a class with few labelled nodes is not ignored. Multiplies ``fit``'s
        ``sample_weight``. Not for multi-label ``y``.
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
        Hold out ``validation_fraction`` of the labelled nodes (drawn afresh at every fit,
        stratified by class), or ``fit``'s ``validation_nodes`` when given; stop after
        ``n_iter_no_change`` epochs without improvement of their accuracy (multi-label:
        micro-averaged F1) and keep the best epoch's model.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=20
    warm_start : bool, default=False
        Continue from the fitted model (and its codebooks on the same graph).
    device : str, int or torch.device, default="auto"
        ``"auto"`` uses CUDA when available; ``"cpu"``, ``"cuda"``, ``"cuda:N"``, an index
        ``N`` (``cuda:N``) or a ``torch.device``. A device the machine lacks is an error at
        the start of ``fit``, not a fallback. The fitted model is kept on the CPU, so a model
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
        Predicted label (multi-label: indicator row) of every node of the training graph;
        after ``fit(shard)``, of the nodes the shard holds, in its order.
    best_validation_score_ : float or None
        The best validation score over the epochs of the last fit (accuracy; multi-label:
        micro-averaged F1), with ``early_stopping`` or ``validation_nodes``; else ``None``.
    history_ : list of dict
        Per epoch: ``loss``, ``time``, ``val_score`` (with early stopping) and, per VQ layer,
        ``vq_error``, ``assignments_changed``, ``codewords_reseeded``, ``codeword_shift``,
        ``grad_codeword_norm``, ``blue_message_norm`` and ``grad_trust`` (the scale applied to
        the backward messages).
    vq_error_ : ndarray of shape (n_vq_layers,)
        Relative VQ error ``‖X − R X̃‖_F / ‖X‖_F`` of each quantised layer input over the last
        epoch (empty for full-graph training).
    partition_ : ndarray of shape (n_nodes,), int32, or None
        The part of every node of the training graph (``sampler="cluster"``), so that
        predictions on the same graph, even a fresh copy of it, batch it as training did
        without partitioning again; ``None`` otherwise.
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

    _parameter_constraints: dict = {
        **BaseVQGNN._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(
        self,
        backbone: str | Backbone = "gcn",
        *,
        hidden_layer_sizes: Any = (64,),
        heads: int | None = None,
        n_codewords: int = 256,
        codeword_dim: int | str = "auto",
        batch_size: int | None = 512,
        sampler: str = "cluster",
        parts_per_batch: int = 4,
        partitioner: str = "metis",
        inference: str = "vq",
        backward_messages: str = "auto",
        grad_scale: float = 1.0,
        ema_decay: float = 0.99,
        dropout: float = 0.5,
        attention_dropout: float = 0.0,
        learning_rate: float = 0.002,
        weight_decay: float = 5e-4,
        class_weight: dict | str | None = None,
        accumulate_batches: int | str = "epoch",
        max_epochs: int = 200,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 20,
        warm_start: bool = False,
        device: str | torch.device = "auto",
        sparse_backend: str = "auto",
        random_state: Any = None,
        verbose: int = 0,
    ):
        super().__init__(
            backbone,
            hidden_layer_sizes=hidden_layer_sizes,
            heads=heads,
            n_codewords=n_codewords,
            codeword_dim=codeword_dim,
            batch_size=batch_size,
            sampler=sampler,
            parts_per_batch=parts_per_batch,
            partitioner=partitioner,
            inference=inference,
            backward_messages=backward_messages,
            grad_scale=grad_scale,
            ema_decay=ema_decay,
            dropout=dropout,
            attention_dropout=attention_dropout,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            accumulate_batches=accumulate_batches,
            max_epochs=max_epochs,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            warm_start=warm_start,
            device=device,
            sparse_backend=sparse_backend,
            random_state=random_state,
            verbose=verbose,
        )
        self.class_weight = class_weight

    def _draw_validation(
        self, labels: np.ndarray, labelled: np.ndarray, multilabel: bool, rs: Any
    ) -> np.ndarray:
        """``validation_fraction`` of the labelled nodes, drawn afresh, stratified by class
        when every class has two labelled nodes or more (so each class is validated in
        proportion); at least one node."""
        n_val = max(1, int(round(self.validation_fraction * len(labelled))))
        if n_val >= len(labelled):
            raise ValueError(
                f"validation_fraction={self.validation_fraction} leaves no labelled node to "
                f"train on ({len(labelled)} labelled)"
            )
        strata = None
        if not multilabel:
            counts = np.unique(labels[labelled], return_counts=True)[1]
            if counts.min() >= 2 and n_val >= len(counts) and len(labelled) - n_val >= len(counts):
                strata = labels[labelled]
        _, val = train_test_split(
            labelled, test_size=n_val, stratify=strata, random_state=rs.randint(2**31 - 1)
        )
        return np.sort(val)

    def _weights(self, encoded: np.ndarray, nodes: NodeSet, sample_weight: Any) -> Tensor | None:
        """Per-node loss weights (n,), mean 1 over the training nodes, or ``None`` (all 1)."""
        n = len(encoded)
        if self.class_weight is None and sample_weight is None:
            return None
        weights = np.ones(n, dtype=np.float64)
        train = (encoded >= 0).reshape(n, -1).any(1)
        if sample_weight is not None:
            given = np.asarray(sample_weight)
            if given.dtype == object or not np.issubdtype(given.dtype, np.number):
                raise ValueError(f"sample_weight must hold numbers, got dtype {given.dtype}")
            if given.shape != (len(nodes),):
                raise ValueError(
                    f"sample_weight must have shape ({len(nodes)},), one weight per node of "
                    f"{'the view' if len(nodes) != n else 'the graph'}, got {given.shape}"
                )
            if not np.all(np.isfinite(given)) or np.any(given < 0):
                raise ValueError("sample_weight must be finite and non-negative")
            weights[nodes.index] = given
        if self.class_weight is not None:
            if self.multilabel_:
                raise ValueError(
                    "class_weight is for class labels; with a multi-label indicator y, weight "
                    "the nodes with sample_weight"
                )
            per_class = compute_class_weight(
                self.class_weight, classes=self.classes_, y=self.classes_[encoded[train]]
            )
            weights[train] *= per_class[encoded[train]]
        total = weights[train].sum()
        if total <= 0:
            raise ValueError("sample_weight is zero for every labelled training node")
        weights *= train.sum() / total
        return torch.from_numpy(weights.astype(np.float32))

    def _predicted(self, nodes: NodeSet) -> np.ndarray:
        """The labels of ``nodes``. Inference keeps each node's class index in the smallest
        integer that holds it (multi-label: a boolean per label), never every node's logits,
        and the indices become labels a block of rows at a time: neither the logits nor an
        int64 index of every node is held beside the result."""
        if self.multilabel_:
            return self._decision(nodes, reduce=_positive).numpy().astype(np.int64)
        index = self._decision(nodes, reduce=_class_index).numpy()
        out = np.empty(len(index), dtype=self.classes_.dtype)
        for start in range(0, len(index), _LABEL_ROWS):
            block = index[start : start + _LABEL_ROWS]
            out[start : start + len(block)] = self.classes_[block]
        return out

    def __sklearn_tags__(self):  # noqa: D105
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        A: Any,
        X: Any = None,
        y: Any = None,
        sample_weight: Any = None,
        validation_nodes: Any = None,
        callbacks: Any = None,
        distributed: Any = None,
    ) -> VQGNNClassifier:
        """Fit on a graph: ``fit(A, X, y)`` or ``fit(nodes, y)``.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), NodeSet or GraphShard
            Adjacency, or a ``NodeSet`` view (then the second argument is ``y``, one label per
            node of the view, and every other node of the graph is unlabelled), or one
            process's part of a partitioned graph (``skvqgnn.shards.load_shard``; features and
            labels come from its files, and no other argument is given).
        X : array-like or sparse matrix of shape (n_nodes, n_features)
            Node features (when ``A`` is an adjacency).
        y : array-like of shape (n_nodes,) or (n_nodes, n_labels)
            Integer class labels, ``-1`` for unlabelled nodes; or a multi-label 0/1 indicator
            (dense or sparse), ``-1`` for an unknown entry (a row of -1: unlabelled node).
            Labels may also be integer-valued floats (NaN = unlabelled, as a pandas column
            with missing values), strings, booleans or objects (pandas categoricals and
            nullable integers too), with ``None`` or ``NA`` for an unlabelled node;
            ``classes_`` holds them as given. A ``numpy.ma`` masked array marks the
            unlabelled nodes by its mask, and then every value is a label (for -1 as a class,
            or dtypes such as uint8 that cannot hold -1). A column vector (n, 1) is read as
            class labels, with a ``DataConversionWarning``.
        sample_weight : array-like of shape (n_nodes,), default=None
            Non-negative weight of each node's loss term (one per node of the view with
            ``fit(nodes, y)``), times its class's ``class_weight``. The weights of the
            training nodes are rescaled to mean 1, so they change the balance of the loss,
            not the learning rate.
        validation_nodes : array-like of int or bool, default=None
            Your own validation nodes: positions in ``y`` (node ids with ``fit(A, X, y)``,
            positions in the view with ``fit(nodes, y)``) or a boolean mask of ``y``'s length.
            They must be labelled; they are left out of the loss and scored after every epoch
            (``history_[i]["val_score"]``, ``best_validation_score_``); with
            ``early_stopping=True`` they replace the random draw of ``validation_fraction``.
        callbacks : list of skvqgnn.Callback, default=None
            Hooks into the training loop (after each step and epoch, at the start and end of
            the fit): to record or plot a measure over the epochs, or to stop a fit early.
        distributed : None, False, torch.distributed.ProcessGroup or Strategy, default=None
            Data-parallel training (``doc/howto/distributed.md``). ``None``: when
            ``torch.distributed`` is initialised with several processes (``torchrun``), every
            rank runs this same fit on its share of the batches, and all end with the same
            model; else one process. ``False``: one process even then. A process group: over
            its ranks. A strategy of ``skvqgnn.distributed`` (``Simulated(n)`` reproduces an
            ``n``-rank fit in one process).

        Returns
        -------
        self
        """
        if isinstance(A, GraphShard):
            self._hidden_sizes()
            strategy = resolve_strategy(distributed, self._device())
            seed, val_nodes, task = self._partition_task(
                A, X, y, sample_weight, validation_nodes, strategy
            )
            self._fit_graph(A, val_nodes, seed, task, callbacks, strategy)
            self.transduction_ = self._predicted(A)
            return self
        A, X, y = view_arguments(A, X, y)
        nodes, _ = resolve_graph(A, X)
        _check_not_empty(nodes)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: fit "
                "needs the labels y"
            )
        graph = nodes.graph
        y_view, found = _check_labels(y, len(nodes))
        multilabel = found is None
        labels = np.full((graph.n_nodes, *y_view.shape[1:]), -1, dtype=np.int64)
        labels[nodes.index] = y_view
        if has_repeats(nodes.index):  # a node listed twice: one label for it
            again = labels[nodes.index] != y_view
            if again.reshape(len(nodes), -1).any():
                node = nodes.index[np.flatnonzero(again.reshape(len(nodes), -1).any(1))[0]]
                raise ValueError(
                    f"node {node} appears more than once in the NodeSet with different labels "
                    "in y; give each node one label"
                )
        labelled = np.flatnonzero((labels >= 0).reshape(graph.n_nodes, -1).any(1))
        if len(labelled) == 0:
            raise ValueError(
                "y has no labelled node: every entry is unlabelled (-1, NaN, None or masked)"
            )
        self._hidden_sizes()
        strategy = resolve_strategy(distributed, self._device())
        rs, seed = self._fit_random_state(strategy)
        val_nodes = np.zeros(0, dtype=np.int64)
        if validation_nodes is not None:
            val_nodes = _given_validation(validation_nodes, nodes, labels, len(labelled))
        elif self.early_stopping:
            val_nodes = self._draw_validation(labels, labelled, multilabel, rs)
        classes = np.arange(labels.shape[1]) if multilabel else found
        if (
            self.warm_start
            and hasattr(self, "classes_")
            and (multilabel != self.multilabel_ or not np.array_equal(classes, self.classes_))
        ):
            raise ValueError(
                "warm_start=True needs the same classes (or label columns) as the previous fit"
            )
        if not multilabel and len(classes) < 2:
            hint = ""
            if not isinstance(y, np.ma.MaskedArray) and np.isin(-1, np.asarray(y)):
                hint = (
                    " (-1 marks an unlabelled node; if -1 is one of your classes, pass y as "
                    "numpy.ma.masked_array(y, mask=unlabelled) or as strings)"
                )
            raise ValueError(
                f"y must contain at least 2 classes, got one class: {classes.tolist()}{hint}"
            )
        self.classes_ = classes
        self.multilabel_ = multilabel
        self.n_features_in_ = graph.n_features
        # labels becomes the training targets (codes into classes_; multi-label: the
        # indicator), the validation nodes' unlabelled in it; the task keeps them in the
        # smallest integers, and no int64 array of n labels lives through the epochs
        del y_view, labelled
        val_labels = labels[val_nodes]
        labels[val_nodes] = -1
        weights = self._weights(labels, nodes, sample_weight)
        task = NodeClassification(labels, val_labels, len(classes), multilabel, weights)
        del labels
        self._fit_graph(graph, val_nodes, seed, task, callbacks, strategy)
        self.transduction_ = self._predicted(graph.nodes())
        return self

    def _partition_task(
        self,
        shard: GraphShard,
        X: Any,
        y: Any,
        sample_weight: Any,
        validation_nodes: Any,
        strategy: Any,
    ) -> tuple[int, np.ndarray, NodeClassification]:
        """The seed, validation nodes and task of a partitioned fit: the labels of the nodes
        the shard holds (from its files); per part, ``validation_fraction`` of its labelled
        nodes drawn as its rank draws them; class weights and the loss scale from the counts
        of every part."""
        given = {"X": X, "y": y, "sample_weight": sample_weight}
        given["validation_nodes"] = validation_nodes
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise ValueError(
                f"fit(shard) takes the features and labels from the partition's files, not "
                f"{', '.join(extra)}: write them with write_shards(..., y=y)"
            )
        if shard.labels is None:
            raise ValueError(
                f"the partition in {shard.folder} has no labels: write it with "
                "write_shards(..., y=y) to train on it"
            )
        rs, seed = self._fit_random_state(strategy)
        classes = shard.classes
        if (
            self.warm_start
            and hasattr(self, "classes_")
            and not (not self.multilabel_ and np.array_equal(classes, self.classes_))
        ):
            raise ValueError("warm_start=True needs the same classes as the previous fit")
        encoded = np.full(shard.n_nodes, -1, dtype=_code_dtype(len(classes)))
        encoded[shard.start : shard.stop] = shard.labels
        val = [np.zeros(0, dtype=np.int64)]
        if self.early_stopping:
            for r in shard.ranks:
                lo, hi = int(shard.offsets[r]), int(shard.offsets[r + 1])
                labelled = lo + np.flatnonzero(encoded[lo:hi] >= 0)
                if len(labelled) >= 2:
                    part_rs = np.random.RandomState(rank_seed(seed, r) % 2**32)
                    val.append(self._draw_validation(encoded, labelled, False, part_rs))
        val_nodes = np.concatenate(val)
        self.classes_, self.multilabel_ = classes, False
        self.n_features_in_ = shard.n_features
        val_labels = encoded[val_nodes]
        encoded[val_nodes] = -1
        train = encoded >= 0
        counts = np.bincount(encoded[train], minlength=len(classes)).astype(np.float64)
        counts = strategy.all_reduce(torch.from_numpy(counts)).numpy()  # every part's
        weights = None
        if self.class_weight is not None:
            every = np.repeat(np.arange(len(classes)), counts.astype(np.int64))
            per_class = compute_class_weight(self.class_weight, classes=classes, y=classes[every])
            node = np.ones(shard.n_nodes, dtype=np.float64)
            node[train] = per_class[encoded[train]]
            node *= counts.sum() / float(counts @ per_class)  # mean 1 over every training node
            weights = torch.from_numpy(node.astype(np.float32))
        task = NodeClassification(encoded, val_labels, len(classes), False, weights)
        task.n_targets = int(counts.sum())  # the loss is scaled by every part's targets
        return seed, val_nodes, task

    def decision_function(self, A: Any, X: Any = None) -> np.ndarray:
        """Logits (n, n_classes), (n,) for two classes, or (n, n_labels) multi-label, for
        ``(A, X)`` or ``nodes``.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, NodeSet or GraphShard
            Adjacency of the graph to predict on (the training graph, the training graph with
            new nodes, or another graph), or a ``Graph`` or ``NodeSet`` view (then ``X`` is
            not given, and the rows are the view's nodes; a ``GraphShard``: the nodes it holds).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (n,), (n, n_classes) or (n, n_labels)
            One row per node of the graph, or of the view. With two classes, as in
            scikit-learn, one score per node: positive favours ``classes_[1]`` (the difference
            of the two logits, so that ``predict_proba[:, 1]`` is its sigmoid).
        """
        check_is_fitted(self, "model_")  # before the inputs: unfitted is the first error
        nodes, _ = resolve_graph(A, X, shards=True)
        logits = self._decision(nodes)
        if not self.multilabel_ and logits.shape[1] == 2:
            return (logits[:, 1] - logits[:, 0]).numpy()
        return logits.numpy()

    def predict_proba(self, A: Any, X: Any = None) -> np.ndarray:
        """Class probabilities (n, n_classes), softmax; multi-label: per-label probabilities
        (n, n_labels), sigmoid.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, NodeSet or GraphShard
            Adjacency of the graph to predict on (the training graph, the training graph with
            new nodes, or another graph), or a ``Graph`` or ``NodeSet`` view (then ``X`` is
            not given, and the rows are the view's nodes; a ``GraphShard``: the nodes it holds).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (n, n_classes) or (n, n_labels)
            Columns in the order of ``classes_``.
        """
        check_is_fitted(self, "model_")  # before the inputs: unfitted is the first error
        nodes, _ = resolve_graph(A, X, shards=True)
        logits = self._decision(nodes)
        if self.multilabel_:
            return torch.sigmoid(logits).numpy()
        return torch.softmax(logits, dim=1).numpy()

    def predict_log_proba(self, A: Any, X: Any = None) -> np.ndarray:
        """Log of ``predict_proba``, computed from the logits (no underflow to ``-inf``).

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, NodeSet or GraphShard
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None

        Returns
        -------
        ndarray of shape (n, n_classes) or (n, n_labels)
        """
        check_is_fitted(self, "model_")  # before the inputs: unfitted is the first error
        nodes, _ = resolve_graph(A, X, shards=True)
        logits = self._decision(nodes)
        if self.multilabel_:
            return F.logsigmoid(logits).numpy()
        return torch.log_softmax(logits, 1).numpy()

    def embed(self, A: Any, X: Any = None) -> np.ndarray:
        """Node embeddings: the last hidden layer's output (n, hidden_layer_sizes[-1]), the
        representation the output layer classifies, with the configured inference mode.

        The same name and signature as ``VQGNNLinkPredictor.embed``, so that a pipeline can
        take embeddings from either estimator.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, NodeSet or GraphShard
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None

        Returns
        -------
        ndarray of shape (n, hidden_layer_sizes[-1])
        """
        check_is_fitted(self, "model_")
        if len(self.model_.layers) < 2:
            raise ValueError(
                "a network without hidden layers (hidden_layer_sizes=()) has no embedding"
            )
        check_is_fitted(self, "model_")  # before the inputs: unfitted is the first error
        nodes, _ = resolve_graph(A, X, shards=True)
        return self._decision(nodes, hidden=True).numpy()

    def predict(self, A: Any, X: Any = None) -> np.ndarray:
        """Class of every node of ``(A, X)``, or of the nodes of a ``NodeSet``; multi-label: the
        (n, n_labels) 0/1 indicator of the labels whose probability exceeds 0.5.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, NodeSet or GraphShard
            Adjacency of the graph to predict on (the training graph, the training graph with
            new nodes, or another graph), or a ``Graph`` or ``NodeSet`` view (then ``X`` is
            not given, and the rows are the view's nodes; a ``GraphShard``: the nodes it holds).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (n,) or (n, n_labels)
            Labels from ``classes_``, or the multi-label indicator.
        """
        check_is_fitted(self, "model_")  # before the inputs: unfitted is the first error
        nodes, _ = resolve_graph(A, X, shards=True)
        return self._predicted(nodes)

    def score(self, A: Any, X: Any = None, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy (multi-label: subset accuracy): ``score(nodes, y)`` or ``score(A, X, y)``.

        Unlabelled nodes (``-1``, NaN, ``None`` in object labels, masked entries) are left
        out, as in ``fit``.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, or NodeSet
            Adjacency, or a ``Graph`` or ``NodeSet`` (then the second argument is ``y``).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.
        y : array-like of shape (n,) or (n, n_labels), default=None
            True labels of the nodes scored (every node of ``(A, X)``, or the view's nodes).
        sample_weight : array-like of shape (n,), default=None
            Weight of each node's hit.

        Returns
        -------
        float
            The (weighted) fraction of labelled nodes whose predicted label (multi-label:
            whole indicator row) equals ``y``.
        """
        A, X, y = view_arguments(A, X, y)
        pred = self.predict(A, X)
        if y is None:
            raise TypeError("score needs the true labels y")
        masked = isinstance(y, np.ma.MaskedArray)
        mask = np.ma.getmaskarray(y) if masked else np.zeros(np.shape(y), dtype=bool)
        truth = np.asarray(y.toarray() if sp.issparse(y) else y.data if masked else y)
        if truth.ndim == 2 and truth.shape[1] == 1 and not self.multilabel_:
            truth, mask = truth.ravel(), mask.ravel()
        if len(truth) != len(pred):
            raise ValueError(
                f"Found input variables with inconsistent numbers of samples: y has "
                f"{len(truth)} entries for {len(pred)} nodes"
            )
        if truth.ndim == 2:
            known = (truth != -1).any(1) & ~mask.reshape(truth.shape).all(1)
        else:
            known = _labelled(truth, mask if masked else None)
        if not known.any():
            raise ValueError("y has no labelled node to score: every entry is unlabelled")
        weight = None if sample_weight is None else np.asarray(sample_weight)[known]
        return float(accuracy_score(truth[known], pred[known], sample_weight=weight))
