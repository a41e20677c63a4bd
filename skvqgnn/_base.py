"""Shared plumbing of the VQ-GNN estimators: input resolution, batches, training and inference.

The estimator holds the fitted state (model and codebooks on the CPU, host assignment tables,
the training graph's fingerprint); everything sized by the graph (convolution matrices, the first
layer's aggregated inputs, the batch sampler) is derived from a ``Graph`` and cached on it.
"""

from __future__ import annotations

import copy
import math
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
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import Tensor

from .graph import Graph, NodeSet
from .layers import BACKBONES, VQGNN, Backbone, Batch
from .samplers import ClusterSampler, NodeSampler, RandomNodeSampler
from .sketch import (
    codeword_sketch,
    gather_rows,
    resolve_backend,
    split_batch_edges,
    to_torch_sparse,
)
from .vq import AssignmentTable

_KMEANS_SAMPLE = 8192
_KMEANS_ITERS = 10


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_graph(A: Any, X: Any) -> tuple[NodeSet, bool]:
    """``(A, X)`` or a ``NodeSet`` -> (the node view, whether a view was given)."""
    if isinstance(A, NodeSet):
        return A, True
    if isinstance(A, Graph):
        return A.nodes(), True
    if X is None:
        raise TypeError(
            "pass either a NodeSet (Graph(A, X).nodes(idx)) or both the adjacency A and the "
            "node features X"
        )
    return Graph(A, X).nodes(), False


class GraphData:
    """Host-side structures of one graph for one backbone (cached on the ``Graph``).

    convolutions : per convolution, CSR ``C^(s)`` or ``None`` (identity)
    transposes : per convolution, CSR ``C^(s)ᵀ`` or ``None``
    inputs : per convolution, the first layer's aggregated input ``C^(s) X`` (n, f0)
    """

    def __init__(self, graph: Graph, backbone: Backbone):
        self.graph = graph
        self.n_nodes = graph.n_nodes
        self.convolutions = backbone.convolutions(graph.A)
        self.identity = [C is None for C in self.convolutions]
        self.transposes = [None if C is None else C.T.tocsr() for C in self.convolutions]
        for Ct in self.transposes:
            if Ct is not None:
                Ct.sort_indices()
        self.inputs = [graph.X if C is None else _aggregate(C, graph.X) for C in self.convolutions]
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
    """Rows of a first-layer input as a device tensor: sparse COO when ``M`` is sparse."""
    if not sp.issparse(M):
        return torch.from_numpy(M[rows]).to(device)
    local, cols, vals = gather_rows(M, rows)
    return torch.sparse_coo_tensor(
        torch.from_numpy(np.vstack([local, cols])),
        torch.from_numpy(np.asarray(vals, dtype=np.float32)),
        (len(rows), M.shape[1]),
        is_coalesced=True,
        check_invariants=False,
    ).to(device)


def make_batch(
    data: GraphData,
    nodes: np.ndarray,
    tables: list[AssignmentTable] | None,
    n_codewords: int,
    device: torch.device,
    transposed: bool,
    receivers: np.ndarray | None = None,
) -> Batch:
    """Gather the host structures of batch ``nodes`` and move them to ``device``.

    ``transposed`` adds the transposed sketches for the backward messages. ``receivers`` (n,) bool
    marks the nodes with a loss term: the last layer's gradient is zero elsewhere, so its
    transposed sketch keeps only those out-of-batch receivers.
    """
    position = data.position
    position[nodes] = np.arange(len(nodes))
    try:
        inputs = [input_rows(M, nodes, device) for M in data.inputs]
        intra: list[Tensor | None] = []
        per_conv_edges = []
        per_conv_tedges = []
        for C, Ct in zip(data.convolutions, data.transposes, strict=True):
            if C is None:
                intra.append(None)
                per_conv_edges.append(None)
                per_conv_tedges.append(None)
                continue
            edges = split_batch_edges(C, nodes, position)
            intra.append(to_torch_sparse(edges.intra(), device))
            per_conv_edges.append(edges)
            per_conv_tedges.append(split_batch_edges(Ct, nodes, position) if transposed else None)
    finally:
        position[nodes] = -1

    def level_sketches(edges: list, codes: np.ndarray) -> list[Tensor | None]:
        return [
            None if e is None else to_torch_sparse(codeword_sketch(e, codes, n_codewords), device)
            for e in edges
        ]

    sketches: list[list[Tensor | None]] = []
    tsketches: list[list[Tensor | None]] = []
    for level, table in enumerate(tables or []):
        sketches.append(level_sketches(per_conv_edges, table.codes))
        if transposed:
            tedges = per_conv_tedges
            if receivers is not None and level == len(tables) - 1:
                tedges = [None if e is None else e.keep_out(receivers) for e in tedges]
            tsketches.append(level_sketches(tedges, table.codes))
    return Batch(
        nodes=torch.from_numpy(nodes),
        inputs=inputs,
        intra=intra,
        sketches=sketches,
        transposed=tsketches,
    )


@dataclass
class FitState:
    """Everything a fit produces that predict needs, kept together for best-epoch snapshots."""

    model: VQGNN
    tables: list[AssignmentTable]


class BaseVQGNN(BaseEstimator):
    """Hyper-parameters, validation, the training loop and inference shared by the estimators.

    Subclasses implement ``_loss`` (batch logits and node ids -> summed loss over the batch's
    training targets) and ``_val_score``, and set ``_n_outputs``, ``_n_targets`` and
    ``_loss_mask`` (n,) bool, the nodes with a loss term, before calling ``_fit_graph``.
    """

    _parameter_constraints: dict = {
        "backbone": [StrOptions(set(BACKBONES))],
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "n_codewords": [Interval(Integral, 1, None, closed="left")],
        "codeword_dim": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "sampler": [StrOptions({"cluster", "random"})],
        "parts_per_batch": [Interval(Integral, 1, None, closed="left")],
        "inference": [StrOptions({"vq", "exact"})],
        "backward_messages": [StrOptions({"codewords", "none"})],
        "grad_scale": [Interval(Real, 0, None, closed="left")],
        "ema_decay": [Interval(Real, 0, 1, closed="neither")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "device": [str, torch.device],
        "sparse_backend": [StrOptions({"auto", "torch", "torch_sparse"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        backbone: str = "gcn",
        *,
        hidden_layer_sizes: Any = (64,),
        n_codewords: int = 256,
        codeword_dim: int = 4,
        batch_size: int | None = 512,
        sampler: str = "cluster",
        parts_per_batch: int = 4,
        inference: str = "vq",
        backward_messages: str = "codewords",
        grad_scale: float = 1.0,
        ema_decay: float = 0.99,
        dropout: float = 0.5,
        learning_rate: float = 0.002,
        weight_decay: float = 5e-4,
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
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.device = device
        self.sparse_backend = sparse_backend
        self.random_state = random_state
        self.verbose = verbose

    # -- subclass hooks --------------------------------------------------------------------------
    def _loss(self, logits: Tensor, nodes: Tensor) -> tuple[Tensor, int]:
        """Summed loss over the batch's training targets, and how many there were."""
        raise NotImplementedError

    def _val_score(self, logits: Tensor, nodes: np.ndarray) -> float:
        raise NotImplementedError

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

    def _graph_data(self, graph: Graph) -> GraphData:
        return graph.cached(
            ("graph_data", self.backbone), lambda: GraphData(graph, BACKBONES[self.backbone]())
        )

    def _sampler_for(self, graph: Graph, seed: int) -> NodeSampler:
        b = self._effective_batch_size(graph.n_nodes)
        if self.sampler == "random" or b >= graph.n_nodes:
            return RandomNodeSampler(graph.n_nodes, b)
        key = ("cluster_sampler", b, self.parts_per_batch, seed)
        return graph.cached(key, lambda: ClusterSampler(graph.A, b, self.parts_per_batch, seed))

    def _effective_batch_size(self, n_nodes: int) -> int:
        return n_nodes if self.batch_size is None else min(self.batch_size, n_nodes)

    def _check_graph_features(self, graph: Graph) -> None:
        if graph.n_features != self.n_features_in_:
            raise ValueError(
                f"X has {graph.n_features} features, but {type(self).__name__} was fitted with "
                f"{self.n_features_in_} features"
            )

    # -- training --------------------------------------------------------------------------------
    def _build_model(self, n_features: int, n_outputs: int, identity: list[bool]) -> VQGNN:
        dims = [n_features, *self._hidden_sizes(), n_outputs]
        return VQGNN(
            BACKBONES[self.backbone](),
            identity,
            dims,
            self.n_codewords,
            self.codeword_dim,
            self.ema_decay,
            self.grad_scale,
            self.dropout,
            resolve_backend(self.sparse_backend),
        )

    def _fit_graph(self, nodes: NodeSet, val_nodes: np.ndarray, seed: int) -> None:
        """Train on ``nodes.graph`` with the subclass's targets; ``val_nodes`` may be empty."""
        graph = nodes.graph
        device = resolve_device(self.device)
        data = self._graph_data(graph)
        sampler = self._sampler_for(graph, seed)
        full_graph = self._effective_batch_size(graph.n_nodes) >= graph.n_nodes
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)

        reuse = self.warm_start and hasattr(self, "model_")
        if reuse:
            model = self.model_.to(device)
        else:
            model = self._build_model(graph.n_features, self._n_outputs, data.identity).to(device)
        model.sparse_backend = resolve_backend(self.sparse_backend)
        if reuse and self.graph_fingerprint_ == graph.fingerprint:
            tables = self.tables_
        elif full_graph:
            tables = []
        else:
            tables = self._initialise_codebooks(model, data, sampler, gen, device)

        optimiser = torch.optim.Adam(
            model.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
        )
        n_batches = max(1, math.ceil(graph.n_nodes / sampler.batch_size))
        norm = max(1.0, self._n_targets / n_batches)
        history = list(self.history_) if reuse and hasattr(self, "history_") else []
        first_epoch = len(history)
        best = (-np.inf, None)
        stale = 0
        blue = self.backward_messages == "codewords" and not full_graph
        progress = _progress(self.max_epochs, self.verbose, type(self).__name__)
        vq_sq = np.zeros(len(tables))
        vq_norm = np.zeros(len(tables))
        try:
            for epoch in progress:
                t0 = time.perf_counter()
                model.train()
                stats = _EpochStats(len(tables))
                for batch_nodes in sampler.epoch(rng):
                    batch = make_batch(
                        data, batch_nodes, tables, self.n_codewords, device, blue, self._loss_mask
                    )
                    logits, traces = model(batch, blue=blue)
                    loss, count = self._loss(logits, batch.nodes.to(device))
                    optimiser.zero_grad(set_to_none=True)
                    if count:
                        (loss / norm).backward()
                        optimiser.step()
                    stats.loss += float(loss.detach()) if count else 0.0
                    stats.count += count
                    if tables:
                        self._update_codebooks(model, traces, tables, batch_nodes, gen, stats)
                record = stats.summary(first_epoch + epoch)
                record["time"] = time.perf_counter() - t0
                if len(val_nodes):
                    model.eval()
                    logits = self._infer(model, data, tables, sampler, val_nodes, device)
                    record["val_score"] = self._val_score(logits, val_nodes)
                    if record["val_score"] > best[0] + 1e-12:
                        best = (
                            record["val_score"],
                            FitState(copy.deepcopy(model), copy.deepcopy(tables)),
                        )
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
        if self.early_stopping and best[1] is not None:
            model, tables = best[1].model, best[1].tables
        model.eval()
        self.model_ = model.cpu()
        self.tables_ = tables
        self.graph_fingerprint_ = graph.fingerprint
        self.history_ = history
        self.n_iter_ = len(history)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.vq_error_ = np.sqrt(vq_sq / vq_norm) if len(tables) else np.zeros(0)
        self._fit_seed_ = seed

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
            n = H.shape[0]
            sample = torch.randperm(n, generator=gen)[: max(_KMEANS_SAMPLE, 4 * cb.n_codewords)]
            x_all = cb.split(torch.from_numpy(H).to(device))  # (n, P, D)
            codes = cb.initialise(x_all, x_all[sample.to(device)], weight, gen, _KMEANS_ITERS)
            table = AssignmentTable(n, cb.n_slices, cb.n_codewords)
            table.set(np.arange(n), codes.cpu().numpy())
            tables.append(table)
        return tables

    @torch.no_grad()
    def _update_codebooks(
        self,
        model: VQGNN,
        traces: list,
        tables: list[AssignmentTable],
        batch_nodes: np.ndarray,
        gen: torch.Generator,
        stats: _EpochStats,
    ) -> None:
        """Assign the batch rows with features and gradients, EMA-update, re-seed unused words."""
        for level, (cb, trace, table) in enumerate(
            zip(model.codebooks, traces, tables, strict=True)
        ):
            x = cb.split(trace.x.detach())  # (b, P, D)
            g = torch.stack(
                [torch.zeros_like(m) if m.grad is None else m.grad.detach() for m in trace.messages]
            )
            g = cb.split(g)  # (S, b, P, D)
            codes = cb.assign(x, g)
            before = cb.codewords.clone()
            last = level == len(tables) - 1
            weight = torch.from_numpy(self._loss_mask[batch_nodes]).to(x.device) if last else None
            cb.update(x, g, codes, weight)
            stats.changed[level] += table.set(batch_nodes, codes.cpu().numpy())
            dead = torch.from_numpy(table.unused()).to(x.device)
            stats.reseeded[level] += cb.reseed(dead, x, g, gen)
            words = cb.codewords
            stats.shift[level] += float((words - before).norm())
            quantised = words[torch.arange(cb.n_slices, device=x.device), codes]  # (b, P, D)
            stats.vq_sq[level] += float(((x - quantised) ** 2).sum())
            stats.vq_norm[level] += float((x**2).sum())
            stats.grad_norm[level] = float(cb.grad_codewords.norm())
            if trace.blue is not None:
                stats.blue_norm[level] += float(trace.blue.norm())

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
                if i == 0:
                    msgs = [input_rows(M, rows, device) for M in data.inputs]
                else:
                    msgs = [
                        torch.from_numpy(H[rows] if C is None else np.asarray(C[rows] @ H)).to(
                            device
                        )
                        for C in data.convolutions
                    ]
                z = layer(msgs)
                z = torch.relu(z) if i < len(model.layers) - 1 else z
                if out is None:
                    out = np.empty((n, z.shape[1]), dtype=np.float32)
                out[rows] = z.cpu().numpy()
            H = out
        return H

    @torch.no_grad()
    def _infer(
        self,
        model: VQGNN,
        data: GraphData,
        tables: list[AssignmentTable],
        sampler: NodeSampler,
        nodes: np.ndarray,
        device: torch.device,
    ) -> Tensor:
        """Eval-mode logits (len(nodes), out) with mini-batch VQ inference, on the CPU."""
        wanted = np.zeros(data.n_nodes, dtype=bool)
        wanted[nodes] = True
        out: Tensor | None = None
        where = np.full(data.n_nodes, -1, dtype=np.int64)
        where[nodes] = np.arange(len(nodes))
        for batch_nodes in sampler.inference_batches():
            if not wanted[batch_nodes].any():
                continue
            batch = make_batch(data, batch_nodes, tables, self.n_codewords, device, False)
            logits, _ = model(batch)
            logits = logits.cpu()
            if out is None:
                out = torch.empty(len(nodes), logits.shape[1])
            keep = wanted[batch_nodes]
            out[where[batch_nodes[keep]]] = logits[torch.from_numpy(keep)]
        return out

    @torch.no_grad()
    def _assign_new_graph(
        self, model: VQGNN, data: GraphData, device: torch.device
    ) -> list[AssignmentTable]:
        """Assign every node of an unseen graph to its nearest feature codeword, layer by layer."""
        tables: list[AssignmentTable] = []
        for cb in model.codebooks:
            H = self._exact_layers(model, data, device, upto=len(tables) + 1)
            codes = cb.assign(cb.split(torch.from_numpy(H).to(device)))
            table = AssignmentTable(data.n_nodes, cb.n_slices, cb.n_codewords)
            table.set(np.arange(data.n_nodes), codes.cpu().numpy())
            tables.append(table)
        return tables

    def _decision(self, nodes: NodeSet) -> Tensor:
        """Logits (len(nodes), out) for a node view, with the configured inference mode."""
        check_is_fitted(self, "model_")
        graph = nodes.graph
        self._check_graph_features(graph)
        device = resolve_device(self.device)
        model = self.model_.to(device).eval()
        model.sparse_backend = resolve_backend(self.sparse_backend)
        data = self._graph_data(graph)
        try:
            if self.inference == "exact" or not model.codebooks or self.batch_size is None:
                H = self._exact_layers(model, data, device)
                return torch.from_numpy(H[nodes.index])
            if graph.fingerprint == self.graph_fingerprint_:
                tables = self.tables_
            else:
                tables = self._assign_new_graph(model, data, device)
            sampler = self._sampler_for(graph, self._fit_seed_)
            return self._infer(model, data, tables, sampler, nodes.index, device)
        finally:
            self.model_ = model.cpu()


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


def _progress(n: int, verbose: int, desc: str) -> Any:
    if not verbose:
        return _NoProgress(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc, unit="epoch")
