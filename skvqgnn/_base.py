"""Shared plumbing of the VQ-GNN estimators: input resolution, batches, training and inference.

The estimator holds the fitted state (model and codebooks on the CPU, host assignment tables,
the training graph's fingerprint); everything sized by the graph (convolution matrices, the first
layer's aggregated inputs, the batch sampler) is derived from a ``Graph`` and cached on it.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from ._version import PICKLE_VERSION_KEY, check_version, package_version
from .graph import Graph, NodeSet, is_pyg_data
from .layers import BACKBONES, VQGNN, Backbone, Batch, Groups, attend, attend_chunked, kind_of
from .samplers import ClusterSampler, NodeSampler, RandomNodeSampler
from .sketch import (
    BatchEdges,
    codeword_sketch,
    gather_rows,
    group_by_codes,
    resolve_backend,
    split_batch_edges,
    to_torch_sketch,
)
from .vq import AssignmentTable, ProductCodebook

_KMEANS_SAMPLE = 8192
_KMEANS_ITERS = 10


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


def resolve_graph(A: Any, X: Any) -> tuple[NodeSet, bool]:
    """``(A, X)`` or a ``NodeSet`` -> (the node view, whether a view was given). A view or a
    ``Graph`` carries its own features, so ``X`` must not be given with one."""
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


class GraphData:
    """Host-side structures of one graph for one backbone (cached on the ``Graph``).

    convolutions : per convolution, what ``backbone.convolutions(A)`` listed
    kinds : per convolution, ``"identity"``, ``"fixed"``, ``"attention"`` or ``"global"``
    matrices : per convolution, CSR ``C^(s)`` (fixed) or the attention mask, else ``None``
    transposes : their transposes (CSR), or ``None``
    inputs : per identity or fixed convolution, the first layer's aggregated input ``C^(s) X``
        (n, f0); ``None`` for learnable ones, which aggregate ``X`` itself
    """

    def __init__(self, graph: Graph, backbone: Backbone):
        self.graph = graph
        self.n_nodes = graph.n_nodes
        self.convolutions = backbone.convolutions(graph.A)
        self.kinds = [kind_of(C) for C in self.convolutions]
        self.matrices = [
            C if kind == "fixed" else C.mask if kind == "attention" else None
            for C, kind in zip(self.convolutions, self.kinds, strict=True)
        ]
        self.transposes = [None if M is None else M.T.tocsr() for M in self.matrices]
        for Mt in self.transposes:
            if Mt is not None:
                Mt.sort_indices()
        self.inputs = [
            graph.X if kind == "identity" else _aggregate(C, graph.X) if kind == "fixed" else None
            for C, kind in zip(self.convolutions, self.kinds, strict=True)
        ]
        self.position = np.full(self.n_nodes, -1, dtype=np.int64)


def _aggregate(C: sp.csr_array, X: np.ndarray | sp.csr_array) -> np.ndarray | sp.csr_array:
    out = C @ X
    if sp.issparse(out):
        out = sp.csr_array(out, dtype=np.float32)
        if out.nnz > 0.3 * out.shape[0] * out.shape[1]:
            return np.ascontiguousarray(out.toarray())
        out.sort_indices()
        return out
    return np.ascontiguousarray(out, dtype=np.float32)


def input_rows(M: np.ndarray | sp.csr_array, rows: np.ndarray, device: torch.device) -> Tensor:
    """Rows of a first-layer input as a device tensor: sparse CSR when ``M`` is sparse (torch's
    CSR product is several times faster than its COO one on the CPU)."""
    if not sp.issparse(M):
        return torch.from_numpy(M[rows]).to(device)
    _, cols, vals = gather_rows(M, rows)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(M.indptr[rows + 1] - M.indptr[rows], out=indptr[1:])
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used here as documented
        warnings.simplefilter("ignore", UserWarning)
        out = torch.sparse_csr_tensor(
            torch.from_numpy(indptr),
            torch.from_numpy(cols),
            torch.from_numpy(np.asarray(vals, dtype=np.float32)),
            (len(rows), M.shape[1]),
            check_invariants=False,
        )
    return out.to(device)


def dense_rows(M: np.ndarray | sp.csr_array, rows: np.ndarray, device: torch.device) -> Tensor:
    """Rows of a dense or CSR matrix as a dense device tensor."""
    out = M[rows].toarray() if sp.issparse(M) else M[rows]
    return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(device)


def _long(a: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(device)


def _groups(rows: np.ndarray, nodes: np.ndarray, codes: np.ndarray, device: torch.device) -> Groups:
    rows, cols, counts, group_codes = group_by_codes(rows, nodes, codes)
    return Groups(
        rows=_long(rows, device),
        cols=_long(cols, device),
        log_count=torch.from_numpy(np.log(counts).astype(np.float32)).to(device),
        codes=_long(group_codes, device),
    )


def _global_groups(counts: np.ndarray, device: torch.device) -> Groups:
    """Every codeword standing for ``counts`` (k,) out-of-batch nodes, empty ones left out."""
    words = np.flatnonzero(counts > 0)
    return Groups(
        rows=None,
        cols=None,
        log_count=torch.from_numpy(np.log(counts[words]).astype(np.float32)).to(device),
        codes=_long(words[:, None], device),
    )


def make_batch(
    data: GraphData,
    nodes: np.ndarray,
    tables: list[AssignmentTable] | None,
    n_codewords: int,
    device: torch.device,
    transposed: bool | frozenset[str],
    receivers: np.ndarray | None = None,
    input_table: AssignmentTable | None = None,
) -> Batch:
    """Gather the host structures of batch ``nodes`` and move them to ``device``.

    ``input_table`` holds the input codes of a learnable convolution's first-layer senders
    (``VQGNN.input_codebook``); without it every sender must be in the batch (full graph).

    ``transposed`` adds what the backward messages need (transposed sketches, receiver groups):
    ``True`` for every convolution, or the set of convolution kinds that get them.
    ``receivers`` (n,) bool marks the nodes with a loss term: the last layer's gradient is zero
    elsewhere, so its backward messages come only from those out-of-batch receivers.
    """
    b = len(nodes)
    backward = set(data.kinds) if transposed is True else set(transposed or ())
    position = data.position
    position[nodes] = np.arange(b)
    edges: list[BatchEdges | None] = []
    tedges: list[BatchEdges | None] = []
    try:
        inputs = [None if M is None else input_rows(M, nodes, device) for M in data.inputs]
        for M, Mt, kind in zip(data.matrices, data.transposes, data.kinds, strict=True):
            edges.append(None if M is None else split_batch_edges(M, nodes, position))
            back = M is not None and kind in backward
            tedges.append(split_batch_edges(Mt, nodes, position) if back else None)
    finally:
        position[nodes] = -1

    intra: list = []
    for e, kind in zip(edges, data.kinds, strict=True):
        if kind == "fixed":
            intra.append(e.intra_tensor(device))
        elif kind == "attention":
            intra.append((_long(e.in_rows, device), _long(e.in_cols, device)))
        else:
            intra.append(None)

    raw, input_senders, input_pairs = None, [], []
    if any(kind in ("attention", "global") for kind in data.kinds):
        halo = _exact_halo(edges, data.kinds, input_table, budget=b)
        raw = input_rows(data.graph.X, np.concatenate([nodes, halo]), device)
        for e, kind in zip(edges, data.kinds, strict=True):
            groups = pairs = None
            if kind == "attention":
                at = np.minimum(np.searchsorted(halo, e.out_nodes), max(len(halo) - 1, 0))
                exact = halo[at] == e.out_nodes if len(halo) else np.zeros(len(at), dtype=bool)
                rows = np.concatenate([e.in_rows, e.out_rows[exact]])
                cols = np.concatenate([e.in_cols, b + at[exact]])
                pairs = (_long(rows, device), _long(cols, device))
                if input_table is not None:
                    groups = _groups(
                        e.out_rows[~exact], e.out_nodes[~exact], input_table.codes, device
                    )
            elif kind == "global" and input_table is not None:
                seen = np.concatenate([nodes, halo])
                counts = _outside(input_table.codes, input_table.usage[0], seen, n_codewords)
                groups = _global_groups(counts, device)
            input_senders.append(groups)
            input_pairs.append(pairs)

    batch = Batch(
        nodes=torch.from_numpy(nodes),
        inputs=inputs,
        intra=intra,
        sketches=[],
        raw=raw,
        input_pairs=input_pairs,
        input_senders=input_senders,
    )
    last = len(tables or []) - 1
    for level, table in enumerate(tables or []):
        codes, grad_codes = table.codes, table.grad_codes
        restrict = receivers is not None and level == last
        sketches, tsketches, senders, groups_back = [], [], [], []
        for s, kind in enumerate(data.kinds):
            e, te = edges[s], tedges[s]
            if te is not None and restrict:
                te = te.keep_out(receivers)
            sketch = tsketch = fwd = back = None
            if kind == "fixed":
                sketch = to_torch_sketch(codeword_sketch(e, codes, n_codewords), device)
                if te is not None:
                    tsketch = to_torch_sketch(codeword_sketch(te, grad_codes, n_codewords), device)
            elif kind == "attention":
                fwd = _groups(e.out_rows, e.out_nodes, codes, device)
                if te is not None:
                    back = _groups(te.out_rows, te.out_nodes, grad_codes, device)
            elif kind == "global":
                fwd = _global_groups(_outside(codes, table.usage[0], nodes, n_codewords), device)
                if kind in backward:
                    marked = nodes if not restrict else nodes[receivers[nodes]]
                    usage = table.grad_usage[0]
                    if restrict:
                        usage = np.bincount(
                            grad_codes[np.flatnonzero(receivers), 0], minlength=n_codewords
                        )
                    back = _global_groups(_outside(grad_codes, usage, marked, n_codewords), device)
            sketches.append(sketch)
            tsketches.append(tsketch)
            senders.append(fwd)
            groups_back.append(back)
        batch.sketches.append(sketches)
        batch.senders.append(senders)
        if backward:
            batch.transposed.append(tsketches)
            batch.receivers.append(groups_back)
    return batch


def _exact_halo(
    edges: list[BatchEdges | None],
    kinds: list[str],
    input_table: AssignmentTable | None,
    budget: int,
) -> np.ndarray:
    """The out-of-batch senders whose raw features a learnable convolution's first layer reads
    exactly (sorted ids): all of them without an input codebook; else at most ``budget``, those
    with the most edges into the batch (the rest come from their input codewords)."""
    out = [e.out_nodes for e, kind in zip(edges, kinds, strict=True) if kind == "attention"]
    if not out:
        return np.zeros(0, dtype=np.int64)
    senders, counts = np.unique(np.concatenate(out), return_counts=True)
    if input_table is None or len(senders) <= budget:
        return senders
    return np.sort(senders[np.argsort(-counts, kind="stable")[:budget]])


def _outside(codes: np.ndarray, usage: np.ndarray, inside: np.ndarray, k: int) -> np.ndarray:
    """Nodes per whole-vector codeword (k,) outside the batch rows ``inside``, given the
    codeword's ``usage`` (k,) over all the nodes counted."""
    return usage - np.bincount(codes[inside, 0], minlength=k)


_CHUNK_ROWS = 8192  # rows of a layer's inputs held at once by the codebook initialisation


def _column_moments(M: np.ndarray | sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and unbiased variance (f,) of a dense or CSR matrix (1 for one row)."""
    n = M.shape[0]
    if sp.issparse(M):
        mean = np.asarray(M.mean(axis=0), dtype=np.float64).ravel()
        square = np.asarray(M.multiply(M).mean(axis=0), dtype=np.float64).ravel()
    else:
        mean = M.mean(axis=0, dtype=np.float64)
        square = np.square(M, dtype=np.float64).mean(axis=0)
    if n < 2:
        return mean, np.ones_like(mean)
    return mean, np.maximum(square - mean**2, 0.0) * n / (n - 1)


@torch.no_grad()
def initialise_codebook(
    cb: ProductCodebook,
    H: np.ndarray | sp.csr_array,
    weight: float,
    gen: torch.Generator,
    device: torch.device,
    whiten: bool = True,
) -> AssignmentTable:
    """k-means of every node's input ``H`` (n, f), dense or CSR, into ``cb``: moments from all
    rows, centroids from a sample of them, then every node assigned in chunks of rows, so that
    no more than a chunk is held densely on the device. ``whiten=False`` clusters in the
    inputs' own scale (unit variances). Returns the nodes' assignments."""
    n = H.shape[0]
    sample = torch.randperm(n, generator=gen)[: max(_KMEANS_SAMPLE, 4 * cb.n_codewords)]
    mean, var = (
        cb.split(torch.from_numpy(v.astype(np.float32)).to(device)) for v in _column_moments(H)
    )
    if not whiten:
        var = torch.ones_like(var)
    rows = np.sort(sample.numpy())
    cb.seed(mean, var, cb.split(dense_rows(H, rows, device)), gen, _KMEANS_ITERS)
    table = AssignmentTable(n, cb.n_slices, cb.n_codewords)
    count = sums = None
    for start in range(0, n, _CHUNK_ROWS):
        chunk = np.arange(start, min(start + _CHUNK_ROWS, n))
        x = cb.split(dense_rows(H, chunk, device))
        codes = cb.assign(x)
        c, s_ = cb.member_sums(x, codes)
        count, sums = (c, s_) if count is None else (count + c, sums + s_)
        table.set_both(chunk, codes.cpu().numpy())
    cb.settle(count, sums, weight)
    return table


@dataclass
class Snapshot:
    """The network (codebooks included) and head of the best validation epoch.

    The assignment tables, O(n) each, are not copied: the end of fit reassigns every node's
    feature codes from the kept network anyway (``_refresh_codebooks``), so the tables of the
    best epoch would be overwritten; gradient codes are used by training steps only."""

    model: VQGNN
    head: torch.nn.Module | None = None


_STRUCTURE = (
    "backbone, hidden_layer_sizes, heads, n_codewords, codeword_dim or the number of features"
)


def _check_same_structure(fitted: VQGNN, wanted: VQGNN) -> None:
    """``warm_start`` continues ``fitted`` only if the current parameters and data would build
    the same network; else a ``ValueError`` names the first tensor that differs."""
    before, now = getattr(fitted, "built_with", {}), wanted.built_with
    for key, value in now.items():
        if key in before and before[key] != value:
            if key == "n_features":
                detail = f"X has {value} features, the fitted network takes {before[key]}"
            elif key == "n_outputs":
                detail = f"the targets need {value} outputs, the fitted network has {before[key]}"
            else:
                detail = f"{key} changed from {before[key]!r} to {value!r}"
            raise ValueError(
                f"warm_start=True continues the fitted network, but {detail}. Set "
                "warm_start=False to fit a new network"
            )
    old = {k: tuple(v.shape) for k, v in fitted.state_dict().items()}
    new = {k: tuple(v.shape) for k, v in wanted.state_dict().items()}
    layers = [type(m).__name__ for m in fitted.layers], [type(m).__name__ for m in wanted.layers]
    if old == new and layers[0] == layers[1]:
        return
    if layers[0] != layers[1]:
        detail = f"its layers are {layers[0]}, the current parameters give {layers[1]}"
    else:
        name = next((k for k in sorted(old.keys() | new.keys()) if old.get(k) != new.get(k)), "?")
        detail = (
            f"tensor {name!r} is {old.get(name, 'absent')} in the fitted network and would be "
            f"{new.get(name, 'absent')} now"
        )
    raise ValueError(
        f"warm_start=True continues the fitted network, but its structure no longer matches "
        f"({_STRUCTURE} changed): {detail}. Set warm_start=False to fit a new network"
    )


def _check_finite(loss: float, parameters: list[Tensor], epoch: int) -> None:
    """Stop a fit whose loss or parameters are no longer finite (it can never recover)."""
    finite = torch.stack([torch.isfinite(p).all() for p in parameters]).all()
    if math.isfinite(loss) and bool(finite):  # one device sync per epoch
        return
    what = f"the loss is {loss}" if not math.isfinite(loss) else "a parameter is not finite"
    raise ValueError(
        f"training diverged at epoch {epoch}: {what}. Lower learning_rate, or scale the "
        "node features X (for example with StandardScaler): very large input values overflow "
        "float32"
    )


_DIVERGENCE = 10.0  # a fit whose last epoch's loss is this many times its first one diverged


def _warn_if_diverging(history: list[dict[str, Any]], learning_rate: float) -> None:
    """Warn when the loss ended far above where the fit started."""
    if len(history) < 2:
        return
    first, last = history[0]["loss"], history[-1]["loss"]
    if first > 0 and last > _DIVERGENCE * first:
        warnings.warn(
            f"training diverged: the loss rose from {first:.4g} (first epoch) to {last:.4g} "
            f"(last epoch); lower learning_rate (now {learning_rate:g}) or scale the features",
            ConvergenceWarning,
            stacklevel=4,
        )


def _mean_step(
    optimiser: torch.optim.Optimizer, parameters: list[Tensor], grouped: int, with_loss: bool
) -> None:
    """One optimiser step on the mean gradient of the ``grouped`` batches summed into the
    parameters' gradients (none when no batch had a loss term). Dividing the sum here, not each
    batch's loss, leaves the gradient codewords as they are without grouping."""
    if not with_loss:
        return
    if grouped > 1:
        for p in parameters:
            if p.grad is not None:
                p.grad.div_(grouped)
    optimiser.step()


class BaseVQGNN(BaseEstimator):
    """Hyper-parameters, validation, the training loop and inference shared by the estimators.

    Subclasses implement ``_loss`` (batch logits and node ids -> summed loss over the batch's
    training targets) and ``_val_score``, and set ``_n_outputs``, ``_n_targets`` and
    ``_loss_mask`` (n,) bool, the nodes with a loss term, before calling ``_fit_graph``. A
    subclass with trainable parts after the network (a decoder) returns them from ``_make_head``;
    they are optimised with the network, kept in ``head_`` and snapshotted with it.
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
    def _loss(self, logits: Tensor, nodes: Tensor) -> tuple[Tensor, int]:
        """Summed loss over the batch's training targets, and how many there were."""
        raise NotImplementedError

    def _val_score(self, logits: Tensor, nodes: np.ndarray) -> float:
        raise NotImplementedError

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
        if isinstance(self.backbone, Backbone):
            return self.backbone
        cls = BACKBONES[self.backbone]
        if self.backbone in ("gat", "transformer") and self.heads is not None:
            return cls(heads=self.heads)
        return cls()

    def _graph_data(self, graph: Graph) -> GraphData:
        backbone = self._backbone()
        key = ("graph_data", type(backbone).__module__, repr(backbone))
        return graph.cached(key, lambda: GraphData(graph, backbone))

    def _sampler_for(self, graph: Graph, seed: int) -> NodeSampler:
        b = self._effective_batch_size(graph.n_nodes)
        if self.sampler == "random" or b >= graph.n_nodes:
            return RandomNodeSampler(graph.n_nodes, b)
        key = ("cluster_sampler", b, self.parts_per_batch, seed)
        return graph.cached(key, lambda: ClusterSampler(graph.A, b, self.parts_per_batch, seed))

    def _backward_kinds(self, kinds: list[str]) -> frozenset[str]:
        """The convolution kinds whose backward messages (Eq. 7) training adds. ``"auto"``:
        the fixed ones; through attention they made training worse (measured in
        ``doc/gradient_codewords.md``), so a backbone that mixes both (the transformer) keeps
        them for its fixed convolution only."""
        if self.backward_messages == "none":
            return frozenset()
        allowed = (
            {"fixed"} if self.backward_messages == "auto" else {"fixed", "attention", "global"}
        )
        return frozenset(allowed & set(kinds))

    def _effective_batch_size(self, n_nodes: int) -> int:
        return n_nodes if self.batch_size is None else min(self.batch_size, n_nodes)

    def _check_graph_features(self, graph: Graph) -> None:
        if graph.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {graph.n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input (the number it was fitted with)"
            )

    # -- training --------------------------------------------------------------------------------
    def _build_model(self, n_features: int, n_outputs: int, kinds: list[str]) -> VQGNN:
        dims = [n_features, *self._hidden_sizes(), n_outputs]
        codeword_dim = self.codeword_dim
        if codeword_dim == "auto":
            learnable = any(kind in ("attention", "global") for kind in kinds)
            codeword_dim = None if learnable else 4
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

    def _fit_graph(self, nodes: NodeSet, val_nodes: np.ndarray, seed: int) -> None:
        """Train on ``nodes.graph`` with the subclass's targets; ``val_nodes`` may be empty."""
        graph = nodes.graph
        device = resolve_device(self.device)
        name = type(self).__name__
        with _stage(self.verbose, name, f"graph structures ({graph.n_nodes:,} nodes)"):
            data = self._graph_data(graph)
        full_graph = self._effective_batch_size(graph.n_nodes) >= graph.n_nodes
        what = "batches" if full_graph or self.sampler == "random" else "METIS partition"
        with _stage(self.verbose, name, what):
            sampler = self._sampler_for(graph, seed)
        if not full_graph and self.n_codewords > graph.n_nodes:
            raise ValueError(
                f"n_codewords={self.n_codewords} exceeds the {graph.n_nodes} nodes of the graph: "
                "a codebook cannot use more codewords than there are nodes; use n_codewords <= "
                f"{graph.n_nodes} (or batch_size=None for full-graph training)"
            )
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)

        reuse = self.warm_start and hasattr(self, "model_")
        fresh = self._build_model(graph.n_features, self._n_outputs, data.kinds)
        if reuse:
            _check_same_structure(self.model_, fresh)
            model = self.model_.to(device)
            self._apply_settings(model)
        else:
            model = fresh.to(device)
        model.sparse_backend = resolve_backend(self.sparse_backend)
        n_batches = max(1, math.ceil(graph.n_nodes / sampler.batch_size))
        for cb in model.codebooks:  # gradient codewords average over the last epoch
            cb.grad_decay = 1.0 - 1.0 / n_batches
        input_table = None
        if full_graph:  # one batch: no message is quantised (codebooks are filled at the end)
            tables = []
        elif reuse and self.graph_fingerprint_ == graph.fingerprint and self.tables_:
            tables, input_table = self.tables_, self.input_table_
        else:
            levels = len(model.codebooks) + (model.input_codebook is not None)
            with _stage(self.verbose, name, f"k-means of {levels} codebook(s)"):
                tables = self._initialise_codebooks(model, data, sampler, gen, device)
                input_table = self._initialise_input_codebook(model, data, gen, device)

        head = self.head_ if reuse and getattr(self, "head_", None) is not None else None
        if head is not None:
            self._check_same_head(head)
        head = self._make_head() if head is None else head
        self._head = None if head is None else head.to(device)
        parameters = [*model.parameters(), *(() if head is None else head.parameters())]
        optimiser = torch.optim.Adam(
            parameters, lr=self.learning_rate, weight_decay=self.weight_decay
        )
        norm = max(1.0, self._n_targets / n_batches)
        history = list(self.history_) if reuse and hasattr(self, "history_") else []
        first_epoch = len(history)
        best = (-np.inf, None)
        stale = 0
        backward = frozenset() if full_graph else self._backward_kinds(data.kinds)
        blue = bool(backward)
        group = 0 if self.accumulate_batches == "epoch" else self.accumulate_batches
        progress = _progress(self.max_epochs, self.verbose, type(self).__name__)
        vq_sq = np.zeros(len(tables))
        vq_norm = np.zeros(len(tables))
        try:
            for epoch in progress:
                t0 = time.perf_counter()
                model.train()
                if self._head is not None:
                    self._head.train()
                stats = _EpochStats(len(tables))
                grouped = 0  # batches of the current update so far
                with_loss = False  # whether one of them had a loss term
                for batch_nodes in sampler.epoch(rng):
                    if grouped == 0:
                        optimiser.zero_grad(set_to_none=True)
                    if not full_graph:
                        batch_nodes = self._extend_batch(batch_nodes)
                    batch = make_batch(
                        data,
                        batch_nodes,
                        tables,
                        self.n_codewords,
                        device,
                        backward,
                        self._loss_mask,
                        input_table,
                    )
                    logits, traces = model(batch, blue=blue)
                    loss, count = self._loss(logits, batch.nodes.to(device))
                    if count:
                        (loss / norm).backward()
                        with_loss = True
                    grouped += 1
                    if grouped == group:
                        _mean_step(optimiser, parameters, grouped, with_loss)
                        grouped, with_loss = 0, False
                    stats.loss += float(loss.detach()) if count else 0.0
                    stats.count += count
                    if tables:
                        self._update_codebooks(
                            model,
                            traces,
                            tables,
                            batch_nodes,
                            gen,
                            stats,
                            backward=bool(count) and blue,
                        )
                if grouped:  # the last update of the epoch takes the batches left
                    _mean_step(optimiser, parameters, grouped, with_loss)
                record = stats.summary(first_epoch + epoch)
                record["time"] = time.perf_counter() - t0
                _check_finite(record["loss"], parameters, first_epoch + epoch)
                if len(val_nodes):
                    model.eval()
                    if self._head is not None:
                        self._head.eval()
                    logits = self._infer(
                        model, data, tables, input_table, sampler, val_nodes, device
                    )
                    record["val_score"] = self._val_score(logits, val_nodes)
                    if record["val_score"] > best[0] + 1e-12:
                        snapshot = None
                        if self.early_stopping:  # the best epoch's model is the one kept
                            snapshot = Snapshot(copy.deepcopy(model), copy.deepcopy(self._head))
                        best = (record["val_score"], snapshot)
                        stale = 0
                    else:
                        stale += 1
                history.append(record)
                vq_sq, vq_norm = stats.vq_sq, stats.vq_norm
                if self.verbose:
                    progress.set_postfix(
                        {k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "val_score")}
                    )
                if self.early_stopping and stale >= self.n_iter_no_change:
                    break
        except KeyboardInterrupt:
            warnings.warn(
                f"fit interrupted after {len(history)} epochs; keeping the model "
                + ("of the best validation epoch" if best[1] is not None else "as it is"),
                RuntimeWarning,
                stacklevel=3,
            )
        finally:
            if self.verbose:
                progress.close()
        _warn_if_diverging(history[first_epoch:], self.learning_rate)
        head = self._head
        if self.early_stopping and best[1] is not None:
            model, head = best[1].model, best[1].head
        if tables:
            self._refresh_codebooks(model, data, tables, input_table, sampler, device)
        elif model.codebooks:
            # full-graph training (the graph fits in one batch) never touched the codebooks:
            # fill them from the trained network, so that VQ inference on a larger graph
            # quantises with real codewords, not zeros
            tables = self._initialise_codebooks(model, data, sampler, gen, device)
            input_table = self._initialise_input_codebook(model, data, gen, device)
        del self._head
        model.eval()
        self.model_ = model.cpu()
        self.head_ = None if head is None else head.eval().cpu()
        self.tables_ = tables
        self.input_table_ = input_table
        self.graph_fingerprint_ = graph.fingerprint
        self.history_ = history
        self.n_iter_ = len(history)
        scores = [r["val_score"] for r in history[first_epoch:] if "val_score" in r]
        self.best_validation_score_ = max(scores) if scores else None
        with np.errstate(invalid="ignore", divide="ignore"):
            self.vq_error_ = np.sqrt(vq_sq / vq_norm) if len(tables) else np.zeros(0)
        self._fit_seed_ = seed

    def _extend_batch(self, nodes: np.ndarray) -> np.ndarray:
        """Hook: the nodes of a training step, given the sampler's batch (mini-batch mode)."""
        return nodes

    @torch.no_grad()
    def _initialise_codebooks(
        self,
        model: VQGNN,
        data: GraphData,
        sampler: NodeSampler,
        gen: torch.Generator,
        device: torch.device,
    ) -> list[AssignmentTable]:
        """Stream all nodes layer by layer (features only): k-means per slice, then assign all."""
        model.eval()
        tables: list[AssignmentTable] = []
        weight = sampler.batch_size / data.n_nodes
        for level, cb in enumerate(model.codebooks):
            H = self._exact_layers(model, data, device, upto=level + 1)  # (n, f_l) host
            tables.append(initialise_codebook(cb, H, weight, gen, device))
        return tables

    @torch.no_grad()
    def _initialise_input_codebook(
        self, model: VQGNN, data: GraphData, gen: torch.Generator, device: torch.device
    ) -> AssignmentTable | None:
        """k-means of the raw features into the input codebook of learnable convolutions, whose
        codewords are then the exact means of their members; ``None`` without one."""
        if model.input_codebook is None:
            return None
        # raw features are clustered in their own scale: the first layer projects them
        # linearly, so the plain distance bounds the error of a projected codeword, while
        # per-dimension whitening would let rare features (rare words) decide the clusters
        return initialise_codebook(
            model.input_codebook, data.graph.X, 1.0, gen, device, whiten=False
        )

    @torch.no_grad()
    def _update_codebooks(
        self,
        model: VQGNN,
        traces: list,
        tables: list[AssignmentTable],
        batch_nodes: np.ndarray,
        gen: torch.Generator,
        stats: _EpochStats,
        backward: bool,
    ) -> None:
        """Assign the batch rows and EMA-update both codebooks of every VQ layer; re-seed
        unused codewords.

        Feature codes come from the inputs alone; gradient codes from inputs and gradients,
        and only for rows whose gradient is known: none when the step had no backward pass,
        and in the output layer only the nodes with a loss term (the gradient of the others is
        exactly zero, and they are never taken as receivers there).
        """
        last = len(tables) - 1
        for level, (cb, trace, table) in enumerate(
            zip(model.codebooks, traces, tables, strict=True)
        ):
            x = cb.split(trace.x.detach())  # (b, P, D)
            codes = cb.assign(x)
            before = cb.codewords.clone()
            cb.update(x, codes)
            stats.changed[level] += table.set(batch_nodes, codes.cpu().numpy())
            dead = torch.from_numpy(table.unused()).to(x.device)
            stats.reseeded[level] += cb.reseed(dead, x, gen)
            words = cb.codewords
            stats.shift[level] += float((words - before).norm())
            quantised = words[torch.arange(cb.n_slices, device=x.device), codes]  # (b, P, D)
            stats.vq_sq[level] += float(((x - quantised) ** 2).sum())
            stats.vq_norm[level] += float((x**2).sum())
            if backward:
                known = np.ones(len(batch_nodes), dtype=bool)
                if level == last:
                    known = self._loss_mask[batch_nodes]
                rows = np.flatnonzero(known)
                if len(rows):
                    self._update_gradient_codebook(cb, trace, table, x, batch_nodes, rows, gen)
            stats.grad_norm[level] = float(cb.grad_codewords.norm())
            stats.trust[level] = cb.grad_trust.tolist()
            if trace.blue is not None:
                stats.blue_norm[level] += float(trace.blue.norm())

    @staticmethod
    def _update_gradient_codebook(
        cb: ProductCodebook,
        trace: Any,
        table: AssignmentTable,
        x: Tensor,
        batch_nodes: np.ndarray,
        rows: np.ndarray,
        gen: torch.Generator,
    ) -> None:
        """Calibrate, assign and EMA-update the gradient codewords with the batch ``rows``
        whose gradient is known."""
        g, aux = _gradient_channels(trace)
        index = torch.from_numpy(rows).to(x.device)
        x = x[index]
        g = cb.split(g[:, index])  # (S, r, P, D)
        aux = None if aux is None else aux[:, index]
        nodes = batch_nodes[rows]
        stale = torch.from_numpy(table.grad_codes[nodes].astype(np.int64)).to(x.device)
        cb.calibrate(g, stale)
        grad_codes = cb.assign_gradients(x, g, aux)
        cb.update_gradients(x, g, grad_codes, aux=aux)
        table.set_gradients(nodes, grad_codes.cpu().numpy())
        dead = torch.from_numpy(table.grad_unused()).to(x.device)
        cb.reseed_gradients(dead, x, g, gen, aux)

    # -- inference -------------------------------------------------------------------------------
    @torch.no_grad()
    def _exact_layers(
        self, model: VQGNN, data: GraphData, device: torch.device, upto: int | None = None
    ) -> np.ndarray:
        """Layer-wise full-neighbour forward over node chunks; returns layer ``upto``'s input."""
        n = data.n_nodes
        chunk = max(1, min(n, 8192))
        upto = len(model.layers) if upto is None else upto
        H = None
        for i in range(upto):
            layer = model.layers[i]
            out = None
            for start in range(0, n, chunk):
                rows = np.arange(start, min(start + chunk, n))
                z = layer(_exact_messages(model, data, i, H, rows, device))
                z = torch.relu(z) if i < len(model.layers) - 1 else z
                if out is None:
                    out = np.empty((n, z.shape[1]), dtype=np.float32)
                out[rows] = z.cpu().numpy()
            H = out
        return H

    def _level_inputs(
        self,
        model: VQGNN,
        data: GraphData,
        tables: list[AssignmentTable],
        input_table: AssignmentTable | None,
        sampler: NodeSampler,
        device: torch.device,
        level: int,
    ) -> Iterator[tuple[np.ndarray, Tensor]]:
        """Per inference batch, its nodes and the split inputs (b, P, D) of codebook ``level``
        from the network's own VQ forward over the levels below, whose tables must be
        complete (``tables[:level]``)."""
        cb = model.codebooks[level]
        for batch_nodes in sampler.inference_batches():
            batch = make_batch(
                data,
                batch_nodes,
                tables[:level],
                self.n_codewords,
                device,
                False,
                None,
                input_table,
            )
            yield batch_nodes, cb.split(model(batch, upto=level)[0])

    @torch.no_grad()
    def _refresh_codebooks(
        self,
        model: VQGNN,
        data: GraphData,
        tables: list[AssignmentTable],
        input_table: AssignmentTable | None,
        sampler: NodeSampler,
        device: torch.device,
    ) -> None:
        """Feature codes and codewords for inference, level by level over the inference
        batches in eval mode: every node re-assigned by its own dropout-free input, then every
        feature codeword moved to the mean of its members. Training assigns nodes by their
        inputs under dropout and averages those, which is right for training steps but biased
        for predictions. Gradient codebooks are left as they are."""
        was_training = model.training
        model.eval()
        for level, (cb, table) in enumerate(zip(model.codebooks, tables, strict=True)):
            count = sums = None
            for batch_nodes, x in self._level_inputs(
                model, data, tables, input_table, sampler, device, level
            ):
                codes = cb.assign(x)
                c, s_ = cb.member_sums(x, codes)
                count, sums = (c, s_) if count is None else (count + c, sums + s_)
                table.set(batch_nodes, codes.cpu().numpy())
            cb.recentre(count, sums)
        model.train(was_training)

    @torch.no_grad()
    def _infer(
        self,
        model: VQGNN,
        data: GraphData,
        tables: list[AssignmentTable],
        input_table: AssignmentTable | None,
        sampler: NodeSampler,
        nodes: np.ndarray,
        device: torch.device,
        upto: int | None = None,
    ) -> Tensor:
        """Eval-mode logits (len(nodes), out) with mini-batch VQ inference, on the CPU;
        ``upto=l``: the output of layer ``l`` instead (``VQGNN.forward``)."""
        wanted = np.zeros(data.n_nodes, dtype=bool)
        wanted[nodes] = True
        out: Tensor | None = None
        where = np.full(data.n_nodes, -1, dtype=np.int64)
        where[nodes] = np.arange(len(nodes))
        for batch_nodes in sampler.inference_batches():
            if not wanted[batch_nodes].any():
                continue
            levels = tables if upto is None else tables[:upto]
            batch = make_batch(
                data, batch_nodes, levels, self.n_codewords, device, False, None, input_table
            )
            logits, _ = model(batch, upto=upto)
            logits = logits.cpu()
            if out is None:
                out = torch.empty(len(nodes), logits.shape[1])
            keep = wanted[batch_nodes]
            out[where[batch_nodes[keep]]] = logits[torch.from_numpy(keep)]
        return out

    @torch.no_grad()
    def _assign_new_graph(
        self, model: VQGNN, data: GraphData, sampler: NodeSampler, device: torch.device
    ) -> tuple[list[AssignmentTable], AssignmentTable | None]:
        """Assign every node of an unseen graph to its nearest feature codewords, level by level
        in the sampler's inference batches: the raw features to the input codebook first, then
        level ``l``'s inputs from the network's own VQ forward over the levels below, whose
        assignments are complete by then. Memory is that of inference, one batch at a time;
        codebooks are left unchanged."""
        input_table = None
        if model.input_codebook is not None:
            cb = model.input_codebook
            input_table = AssignmentTable(data.n_nodes, 1, cb.n_codewords)
            for start in range(0, data.n_nodes, _CHUNK_ROWS):
                rows = np.arange(start, min(start + _CHUNK_ROWS, data.n_nodes))
                codes = cb.assign(cb.split(dense_rows(data.graph.X, rows, device)))
                input_table.set_both(rows, codes.cpu().numpy())
        tables: list[AssignmentTable] = []
        for level, cb in enumerate(model.codebooks):
            table = AssignmentTable(data.n_nodes, cb.n_slices, cb.n_codewords)
            for batch_nodes, x in self._level_inputs(
                model, data, tables, input_table, sampler, device, level
            ):
                table.set_both(batch_nodes, cb.assign(x).cpu().numpy())
            tables.append(table)
        return tables, input_table

    def _decision(self, nodes: NodeSet, hidden: bool = False) -> Tensor:
        """Logits (len(nodes), out) for a node view, with the configured inference mode;
        ``hidden=True``: the last hidden layer's output (the output layer's input) instead."""
        check_is_fitted(self, "model_")
        if self.inference not in ("vq", "exact"):
            raise InvalidParameterError(
                f"The 'inference' parameter of {type(self).__name__} must be 'vq' or 'exact', "
                f"got {self.inference!r}"
            )
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
                H = self._exact_layers(model, data, device, None if upto is None else upto + 1)
                return torch.from_numpy(H[nodes.index])
            sampler = self._sampler_for(graph, self._fit_seed_)
            if graph.fingerprint == self.graph_fingerprint_:
                tables, input_table = self.tables_, self.input_table_
            else:
                tables, input_table = self._assign_new_graph(model, data, sampler, device)
            return self._infer(model, data, tables, input_table, sampler, nodes.index, device, upto)
        finally:
            self.model_ = model.cpu()


def _gradient_channels(trace: Any) -> tuple[Tensor, Tensor | None]:
    """A VQ layer's gradient channels (S, b, f) and auxiliary scalars (n_aux, b) from its trace:
    one channel per fixed convolution, one per attention head plus, per attention convolution,
    ``⟨g, M⟩`` and the log normaliser of each head (the order of ``VQGNN.channels``/``_aux``)."""
    channels, aux = [], []
    lses = iter(trace.lse)
    for m in trace.messages:
        g = torch.zeros_like(m) if m.grad is None else m.grad.detach()
        if m.dim() == 3:  # (b, H, f): attention
            channels.extend(g.unbind(1))
            aux.extend([(g * m.detach()).sum(-1).T, next(lses).T])
        else:
            channels.append(g)
    return torch.stack(channels), (torch.cat(aux) if aux else None)


_PAIRS = 1 << 24  # (receiver, sender, head) scores computed at once by exact global attention


def _exact_messages(
    model: VQGNN, data: GraphData, i: int, H: np.ndarray | None, rows: np.ndarray, device
) -> list[Tensor | None]:
    """Full-neighbour messages of layer ``i`` into ``rows``; ``H`` is the layer input (host)."""
    messages: list[Tensor | None] = []
    source = data.graph.X if i == 0 else H
    for s, kind in enumerate(data.kinds):
        M = data.matrices[s]
        if i == 0 and kind in ("identity", "fixed"):
            messages.append(input_rows(data.inputs[s], rows, device))
        elif kind == "identity":
            messages.append(torch.from_numpy(H[rows]).to(device))
        elif kind == "fixed":
            messages.append(torch.from_numpy(np.asarray(M[rows] @ H)).to(device))
        elif kind == "global":
            conv = model._attention(i, s)
            step = max(1, _PAIRS // (len(rows) * conv.heads))
            n = source.shape[0]
            senders = (
                dense_rows(source, np.arange(c, min(c + step, n)), device)
                for c in range(0, n, step)
            )
            project = i == 0 and hasattr(conv, "value")
            x_dst = dense_rows(source, rows, device)
            messages.append(attend_chunked(conv, x_dst, senders, project)[0])
        else:
            local, cols, _ = gather_rows(M, rows)
            senders, inverse = np.unique(cols, return_inverse=True)
            edges = (_long(local, device), _long(inverse, device))
            if i == 0:  # receivers first, then the senders
                x = input_rows(source, np.concatenate([rows, senders]), device)
                edges = (edges[0], edges[1] + len(rows))
                messages.append(model.first_attention(s, x, edges, n_receivers=len(rows)))
            else:
                x_dst, x_src = dense_rows(source, rows, device), dense_rows(source, senders, device)
                messages.append(attend(model._attention(i, s), x_dst, x_src, edges)[0])
    return messages


class _EpochStats:
    """Per-epoch training statistics, reported in ``history_``."""

    def __init__(self, n_levels: int):
        self.loss = 0.0
        self.count = 0
        self.changed = [0] * n_levels
        self.reseeded = [0] * n_levels
        self.shift = [0.0] * n_levels
        self.vq_sq = np.zeros(n_levels)
        self.vq_norm = np.zeros(n_levels)
        self.grad_norm = [0.0] * n_levels
        self.blue_norm = [0.0] * n_levels
        self.trust: list[list[float]] = [[] for _ in range(n_levels)]

    def summary(self, epoch: int) -> dict[str, Any]:
        record: dict[str, Any] = {"epoch": epoch, "loss": self.loss / max(1, self.count)}
        if len(self.vq_sq):
            with np.errstate(invalid="ignore", divide="ignore"):
                record["vq_error"] = np.sqrt(self.vq_sq / self.vq_norm).tolist()
            record["assignments_changed"] = list(self.changed)
            record["codewords_reseeded"] = list(self.reseeded)
            record["codeword_shift"] = list(self.shift)
            record["grad_codeword_norm"] = list(self.grad_norm)
            record["blue_message_norm"] = list(self.blue_norm)
            record["grad_trust"] = [list(t) for t in self.trust]
        return record


class _NoProgress:
    def __init__(self, n: int):
        self._it = range(n)

    def __iter__(self) -> Iterator[int]:
        return iter(self._it)

    def set_postfix(self, *_: Any) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _stage(verbose: int, name: str, what: str) -> Iterator[None]:
    """With ``verbose``, report a set-up stage of a fit on stderr as it starts and its time when
    it ends, so that the seconds before the first epoch are accounted for."""
    if not verbose:
        yield
        return
    t0 = time.perf_counter()
    print(f"{name} set-up: {what} ...", end="", file=sys.stderr, flush=True)
    yield
    print(f" {time.perf_counter() - t0:.2f} s", file=sys.stderr, flush=True)


def _progress(n: int, verbose: int, desc: str) -> Any:
    if not verbose:
        return _NoProgress(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, unit="epoch")
