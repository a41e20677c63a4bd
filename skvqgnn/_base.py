"""Shared plumbing of the VQ-GNN estimators: parameters, input resolution, fit and predict.

The estimator holds its parameters and the fitted state (model and codebooks on the CPU, host
assignment tables, the training graph's fingerprint); a fit runs a ``skvqgnn.training.FitLoop``,
and predictions run ``skvqgnn.inference``. Everything sized by the graph (convolution matrices,
the batch sampler and its partition) is derived from a ``Graph`` and cached on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from . import inference
from ._version import PICKLE_VERSION_KEY, check_version, package_version
from .convolutions import Convolution, GraphData
from .distributed import Local, Strategy
from .graph import Graph, NodeSet, PairSet, is_pyg_data
from .layers import BACKBONES, VQGNN, Backbone, make_backbone
from .samplers import PARTITIONERS, ClusterSampler, NodeSampler, RandomNodeSampler
from .shards import GraphShard, ShardData, ShardSampler
from .sketch import resolve_backend
from .training import Callback, FitLoop, ProgressBar, Task


def resolve_device(device: str | int | torch.device) -> torch.device:
    """The ``device`` parameter as a usable ``torch.device``: ``"auto"`` is CUDA when available,
    else the CPU; an integer ``N`` is ``cuda:N``; a string or ``torch.device`` is taken as torch
    reads it. A device this machine does not have gets a ``ValueError`` that says which ones it
    has, before any work is done."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, bool):
        raise ValueError(f"device must be 'auto', a device name or a CUDA index, got {device!r}")
    try:
        resolved = torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"device={device!r} is not a device PyTorch knows; use 'auto', 'cpu', 'cuda', "
            "'cuda:N' or a CUDA index N (for a GPU, 'cuda', not 'gpu')"
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} asks for CUDA, but this PyTorch build or machine has no CUDA "
                "device (torch.cuda.is_available() is False); use device='cpu' or 'auto'"
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device={device!r}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} asks for MPS, which this machine does not have")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"device={device!r}: skvqgnn trains on 'cpu', 'cuda' or 'mps', not {resolved.type!r}"
        )
    return resolved


def _check_not_empty(nodes: NodeSet) -> None:
    """Found 0 nodes: a ``ValueError`` as scikit-learn gives for 0 samples."""
    if nodes.graph.n_nodes == 0:
        raise ValueError("the graph has no node (A is 0 × 0); at least one node is required")
    if len(nodes) == 0:
        raise ValueError(
            f"the NodeSet is empty (0 of the graph's {nodes.graph.n_nodes} nodes); at least one "
            "node is required"
        )


def view_arguments(A: Any, X: Any, y: Any) -> tuple[Any, Any, Any]:
    """``(A, X, y)`` as given, or, when ``A`` is a view that carries its graph's features (a
    ``NodeSet``, ``PairSet``, ``Graph`` or PyG ``Data``) and ``y`` is not given, with the
    second argument taken as ``y``: ``fit(nodes, y)`` is ``fit(A=nodes, X=y)``."""
    if (isinstance(A, (NodeSet, PairSet, Graph)) or is_pyg_data(A)) and y is None:
        return A, None, X
    return A, X, y


def resolve_graph(A: Any, X: Any, shards: bool = False) -> tuple[NodeSet | GraphShard, bool]:
    """``(A, X)`` or a ``NodeSet`` -> (the node view, whether a view was given). A view or a
    ``Graph`` carries its own features, so ``X`` must not be given with one. A `GraphShard`
    (a partitioned graph's part) is returned as it is where ``shards`` (the classifier)."""
    if isinstance(A, GraphShard):
        if not shards:
            raise TypeError(
                "a GraphShard (one part of a partitioned graph) is trained on and predicted by "
                "VQGNNClassifier; link prediction on a partitioned graph is not supported"
            )
        if X is not None:
            raise TypeError("X was given with a GraphShard, which holds its own features")
        return A, True
    if is_pyg_data(A):
        A = Graph.from_pyg(A)
    if isinstance(A, (NodeSet, Graph)):
        if X is not None:
            raise TypeError(
                f"X was given with a {type(A).__name__}, which carries its graph's own features; "
                "pass the view alone (features come from its graph's X), or the adjacency A "
                "with X"
            )
        return (A, True) if isinstance(A, NodeSet) else (A.nodes(), True)
    if X is None:
        raise TypeError(
            "pass either a NodeSet (Graph(A, X).nodes(idx)) or both the adjacency A and the "
            "node features X"
        )
    return Graph(A, X).nodes(), False


class BaseVQGNN(BaseEstimator):
    """Hyper-parameters, validation, the training loop and inference shared by the estimators.

    A subclass's ``fit`` builds its `Task` (targets, loss, validation score) and calls
    ``_fit_graph``, which runs a `FitLoop`. A subclass with trainable parts after the network
    (a decoder) returns them from ``_make_head``; they are optimised with the network, kept in
    ``head_`` and snapshotted with it.
    """

    _parameter_constraints: dict = {
        "backbone": [StrOptions(set(BACKBONES)), Backbone],
        "heads": [Interval(Integral, 1, None, closed="left"), None],
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "n_codewords": [Interval(Integral, 1, None, closed="left")],
        "codeword_dim": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "sampler": [StrOptions({"cluster", "random"})],
        "parts_per_batch": [Interval(Integral, 1, None, closed="left")],
        "partitioner": [StrOptions(set(PARTITIONERS))],
        "inference": [StrOptions({"vq", "exact"})],
        "backward_messages": [StrOptions({"auto", "codewords", "none"})],
        "grad_scale": [Interval(Real, 0, None, closed="left")],
        "ema_decay": [Interval(Real, 0, 1, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "attention_dropout": [Interval(Real, 0, 1, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "accumulate_batches": [Interval(Integral, 1, None, closed="left"), StrOptions({"epoch"})],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "device": [str, Integral, torch.device],
        "sparse_backend": [StrOptions({"auto", "torch", "torch_sparse"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
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
        self.backbone = backbone
        self.hidden_layer_sizes = hidden_layer_sizes
        self.heads = heads
        self.n_codewords = n_codewords
        self.codeword_dim = codeword_dim
        self.batch_size = batch_size
        self.sampler = sampler
        self.parts_per_batch = parts_per_batch
        self.partitioner = partitioner
        self.inference = inference
        self.backward_messages = backward_messages
        self.grad_scale = grad_scale
        self.ema_decay = ema_decay
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.accumulate_batches = accumulate_batches
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.device = device
        self.sparse_backend = sparse_backend
        self.random_state = random_state
        self.verbose = verbose

    # -- pickling --------------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """scikit-learn's state plus the skvqgnn version, checked by ``__setstate__``."""
        return {**super().__getstate__(), PICKLE_VERSION_KEY: package_version()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Warn with ``InconsistentVersionWarning`` if pickled by another skvqgnn version."""
        state = dict(state)
        check_version(type(self).__name__, state.pop(PICKLE_VERSION_KEY, None))
        super().__setstate__(state)

    # -- subclass hooks --------------------------------------------------------------------------
    def _make_head(self) -> torch.nn.Module | None:
        """Trainable module applied after the network (``None``: the logits are the output)."""
        return None

    def _check_same_head(self, head: torch.nn.Module) -> None:
        """Raise if ``warm_start`` would continue a head the current parameters do not build."""

    # -- validation helpers ----------------------------------------------------------------------
    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, Integral):
            sizes = [sizes]
        sizes = list(sizes)
        if not all(isinstance(s, Integral) and s >= 1 for s in sizes):
            raise ValueError(
                f"hidden_layer_sizes must be positive integers, got {self.hidden_layer_sizes!r}"
            )
        return [int(s) for s in sizes]

    def _backbone(self) -> Backbone:
        return make_backbone(self.backbone, self.heads)

    def _device(self) -> torch.device:
        return resolve_device(self.device)

    def _graph_data(self, graph: Graph | GraphShard) -> GraphData | ShardData:
        backbone = self._backbone()
        if isinstance(graph, GraphShard):
            return graph.graph_data(backbone)
        key = ("graph_data", type(backbone).__module__, repr(backbone))
        return graph.cached(key, lambda: GraphData(graph, backbone))

    def _sampler_for(self, graph: Graph | GraphShard, seed: int) -> NodeSampler:
        b = self._effective_batch_size(graph.n_nodes)
        if isinstance(graph, GraphShard):
            return graph.cached(
                ("sampler", b, self.sampler, self.parts_per_batch, self.partitioner, seed),
                lambda: self._shard_sampler(graph, b, seed),
            )
        if self.sampler == "random" or b >= graph.n_nodes:
            return RandomNodeSampler(graph.n_nodes, b)
        key = ("cluster_sampler", b, self.parts_per_batch, self.partitioner, seed)
        part = None
        if getattr(self, "partition_", None) is not None and (
            graph.fingerprint == self.graph_fingerprint_ and seed == self._fit_seed_
        ):
            part = self.partition_  # the training graph again: its METIS partition as it was
        return graph.cached(
            key,
            lambda: ClusterSampler(
                graph.A,
                b,
                self.parts_per_batch,
                seed,
                part=part,
                partitioner=self.partitioner,
                # the graph's answer, which its convolutions need anyway (label propagation
                # would otherwise check again, a few passes over every entry)
                symmetric=(
                    part is None and self.partitioner == "label_propagation" and graph.is_symmetric
                ),
            ),
        )

    def _shard_sampler(self, shard: GraphShard, b: int, seed: int) -> ShardSampler:
        """Batches inside each part of a partitioned graph: random, or clusters of the edges
        inside the part (of its first fixed convolution's pattern)."""
        blocks = None
        if self.sampler == "cluster":
            data = self._graph_data(shard)
            rows = next(c.matrix for c in data.convolutions if c.matrix is not None)

            def blocks(r: int) -> Any:
                lo, hi = int(shard.offsets[r]), int(shard.offsets[r + 1])
                return rows[lo - shard.start : hi - shard.start][:, lo:hi].tocsr()

        return ShardSampler(
            shard.offsets,
            b,
            shard.ranks,
            blocks,
            self.parts_per_batch,
            seed,
            self.partitioner,
        )

    def _backward_flags(self, kinds: Sequence[type[Convolution]]) -> list[bool]:
        """Per convolution, whether training adds its backward messages (Eq. 7). ``"auto"``:
        those of the kinds that default to them, the fixed convolutions; through attention
        they made training worse (measured in ``doc/gradient_codewords.md``), so a backbone
        that mixes both (the transformer) keeps them for its fixed convolution only."""
        if self.backward_messages == "none":
            return [False] * len(kinds)
        if self.backward_messages == "auto":
            return [kind.backward_by_default for kind in kinds]
        return [True] * len(kinds)

    def _effective_batch_size(self, n_nodes: int) -> int:
        return n_nodes if self.batch_size is None else min(self.batch_size, n_nodes)

    def _check_graph_features(self, graph: Graph) -> None:
        if graph.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {graph.n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (the number it was fitted with)"
            )

    # -- training --------------------------------------------------------------------------------
    def _build_model(
        self, n_features: int, n_outputs: int, kinds: Sequence[type[Convolution]]
    ) -> VQGNN:
        dims = [n_features, *self._hidden_sizes(), n_outputs]
        codeword_dim = self.codeword_dim
        if codeword_dim == "auto":
            # attention scores need whole vectors; fixed convolutions quantise slices of 4
            codeword_dim = None if any(kind.learnable for kind in kinds) else 4
        elif len(dims) > 2 and codeword_dim > min(dims[1:-1]):
            raise ValueError(
                f"codeword_dim={codeword_dim} is wider than the narrowest quantised layer input "
                f"({min(dims[1:-1])} features, hidden_layer_sizes={self.hidden_layer_sizes!r}); "
                f"use codeword_dim <= {min(dims[1:-1])}, or 'auto'"
            )
        try:
            model = VQGNN(
                self._backbone(),
                kinds,
                dims,
                self.n_codewords,
                codeword_dim,
                self.ema_decay,
                self.grad_scale,
                self.dropout,
                resolve_backend(self.sparse_backend),
                self.attention_dropout,
            )
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__}: {exc}") from None
        # what shaped the network, so that warm_start can say which of them changed
        model.built_with = {
            "backbone": repr(self._backbone()),
            "hidden_layer_sizes": tuple(dims[1:-1]),
            "heads": self.heads,
            "n_codewords": self.n_codewords,
            "codeword_dim": codeword_dim,
            "n_features": n_features,
            "n_outputs": n_outputs,
        }
        return model

    def __sklearn_tags__(self):  # noqa: D105
        # X is a graph (an adjacency with features, or a NodeSet / PairSet view), not a 2-D
        # array of samples: scikit-learn's array-based checks do not apply as they are
        # (tests/test_estimator_checks.py runs them through an edgeless-graph adapter)
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.sparse = False
        tags.non_deterministic = False
        return tags

    def _validate_params(self) -> None:
        """scikit-learn's checks, plus: a boolean is not a count (``batch_size=True`` is not
        1), and ``inference`` is checked where predictions read it."""
        super()._validate_params()
        for name, rules in self._parameter_constraints.items():
            value = getattr(self, name)
            counts = any(isinstance(r, Interval) and r.type is Integral for r in rules)
            if counts and isinstance(value, (bool, np.bool_)):
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be an int, not the "
                    f"boolean {value!r}"
                )

    def _apply_settings(self, model: VQGNN) -> None:
        """Give a warm-started network the current values of the parameters that do not
        change its shape (dropout rates, codebook decay and gradient weight)."""
        model.dropout = self.dropout
        model.attention_dropout = self.attention_dropout
        for cb in model.codebooks:
            cb.decay = self.ema_decay
            cb.grad_scale = self.grad_scale
        if model.input_codebook is not None:
            model.input_codebook.decay = self.ema_decay

    def _fit_graph(
        self,
        graph: Graph | GraphShard,
        val_nodes: np.ndarray,
        seed: int,
        task: Task,
        callbacks: Any = None,
        strategy: Strategy | None = None,
    ) -> None:
        """Train on ``graph`` (a partitioned fit: this process's part of it) for ``task``;
        ``val_nodes`` (may be empty) are scored after every epoch. The training loop is a
        `FitLoop`; ``callbacks`` hook into it; the ``strategy`` shares its batches among
        processes (only rank 0 shows progress)."""
        hooks = list(callbacks or ())
        for hook in hooks:
            if not isinstance(hook, Callback):
                raise TypeError(
                    f"callbacks must be skvqgnn.Callback instances, got {type(hook).__name__}"
                )
        strategy = Local() if strategy is None else strategy
        if self.verbose and strategy.rank == 0:
            hooks.insert(0, ProgressBar(type(self).__name__))
        with torch.random.fork_rng(devices=[]):  # the fit seeds torch; the caller's stream stays
            FitLoop(self, task, graph, val_nodes, seed, hooks, strategy).run()

    def _fit_random_state(self, strategy: Strategy) -> tuple[np.random.RandomState, int]:
        """The fit's random state (``random_state``) and the seed of its training loop, drawn
        from it first. Data-parallel with ``random_state=None``: rank 0's draw, on every rank."""
        random_state = self.random_state
        if random_state is None and strategy.world_size > 1:
            fresh = np.random.default_rng().integers(np.iinfo(np.int32).max)
            drawn = torch.tensor([int(fresh)], dtype=torch.int64)
            random_state = int(strategy.broadcast(drawn, 0)[0])
        rs = check_random_state(random_state)
        return rs, int(rs.randint(np.iinfo(np.int32).max))

    def _decision(
        self, nodes: NodeSet, hidden: bool = False, reduce: Callable | None = None
    ) -> Tensor:
        """Logits (len(nodes), out) for a node view, with the configured inference mode;
        ``hidden=True``: the last hidden layer's output (the output layer's input) instead;
        ``reduce``: what it returns of each group of rows instead (`vq_inference`)."""
        check_is_fitted(self, "model_")
        if self.inference not in ("vq", "exact"):
            raise InvalidParameterError(
                f"The 'inference' parameter of {type(self).__name__} must be 'vq' or 'exact', "
                f"got {self.inference!r}"
            )
        if isinstance(nodes, GraphShard):
            return self._shard_decision(nodes, hidden, reduce)
        graph = nodes.graph
        _check_not_empty(nodes)
        self._check_graph_features(graph)
        device = resolve_device(self.device)
        model = self.model_.to(device).eval()
        model.sparse_backend = resolve_backend(self.sparse_backend)
        data = self._graph_data(graph)
        try:
            upto = len(model.layers) - 2 if hidden else None
            if self.inference == "exact" or not model.codebooks or self.batch_size is None:
                H = inference.exact_layers(model, data, device, None if upto is None else upto + 1)
                out = torch.from_numpy(H[nodes.index])
                return out if reduce is None else reduce(out)
            sampler = self._sampler_for(graph, self._fit_seed_)
            if graph.fingerprint == self.graph_fingerprint_:
                tables, input_table = self.tables_, self.input_table_
            else:
                tables, input_table = inference.assign_new_graph(model, data, sampler, device)
            index = nodes.index
            return inference.vq_inference(
                model, data, tables, input_table, sampler, index, device, upto, reduce
            )
        finally:
            self.model_ = model.cpu()

    def _shard_decision(
        self, shard: GraphShard, hidden: bool, reduce: Callable | None = None
    ) -> Tensor:
        """Logits of the nodes a `GraphShard` holds, by VQ inference over the training codes
        (the partition fitted on): out-of-part messages come from codewords."""
        if shard.fingerprint != self.graph_fingerprint_ or not self.tables_:
            raise ValueError(
                f"{shard!r} is not the partitioned graph this model was trained on: a "
                "partition is predicted with the codes of its own fit (fit on it first)"
            )
        if self.inference != "vq":
            raise ValueError(
                "inference='exact' needs every node's representation in one process; a "
                "partitioned graph predicts with inference='vq'"
            )
        self._check_graph_features(shard)
        device = resolve_device(self.device)
        model = self.model_.to(device).eval()
        model.sparse_backend = resolve_backend(self.sparse_backend)
        try:
            upto = len(model.layers) - 2 if hidden else None
            sampler = self._sampler_for(shard, self._fit_seed_)
            return inference.vq_inference(
                model,
                self._graph_data(shard),
                self.tables_,
                self.input_table_,
                sampler,
                shard.nodes,
                device,
                upto,
                reduce,
            )
        finally:
            self.model_ = model.cpu()
