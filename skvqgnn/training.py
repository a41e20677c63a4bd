"""The training loop of the estimators: a `FitLoop` of small steps, a `Task`, and `Callback` hooks.

A fit is the estimator's parameters (``BaseVQGNN``), a `Task` (what is optimised: node
classification or link prediction) and a graph. `FitLoop` runs it as a chain of small
methods, ``run`` → ``epoch_pass`` → ``step`` / ``synchronise`` / ``update`` /
``update_codebooks`` → ``evaluate`` / ``keep_if_best`` → ``finish``, and notifies its callbacks
between them. Progress bars, benchmark clocks and learning curves are callbacks; nothing outside
the loop needs its private state. A strategy of ``skvqgnn.distributed`` shares the batches of
each step among processes (``synchronise`` merges what they computed).

The codebook updates of a step are here too (`CodebookUpdates`): the assignment of each batch's
nodes against the step's codebooks (``ProductCodebook.assign``, the codeword search), the
statistics of the EMA updates of the feature and gradient codewords summed over the step's
batches (``ProductCodebook.feature_statistics`` and its siblings), one EMA step
(``ProductCodebook.apply_statistics``) and the re-seeding of unused codewords.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from torch import Tensor

from .convolutions import make_batch
from .distributed import Local, Strategy
from .graph import Graph
from .inference import exact_layers, initialise_codebooks, refresh_codebooks, vq_inference
from .layers import VQGNN, LayerTrace
from .shards import GraphShard, Sharing
from .sketch import resolve_backend
from .vq import AssignmentTable

__all__ = ["Callback", "CodebookUpdates", "FitLoop", "ProgressBar", "Task", "gradient_channels"]


class Task:
    """What a fit optimises: the estimator builds one per fit and hands it to the `FitLoop`.

    A task knows the targets; the loop knows the graph, the network and the codebooks. Node
    classification and link prediction are the two tasks of the package
    (``skvqgnn.classifier.NodeClassification``, ``skvqgnn.link.LinkPrediction``); a new task is a
    subclass and an estimator that builds it.

    Attributes
    ----------
    n_outputs : int
        Width of the network's output (classes, labels, or the embedding width).
    n_targets : int
        Loss terms in one epoch: a step's loss is divided by the per-batch share of it.
    loss_mask : ndarray of shape (n_nodes,), bool
        Nodes whose output enters the loss; the gradient codes of the output layer are
        updated for them only (the gradient of the others is exactly zero).
    head : torch.nn.Module or None
        A trainable module after the network (a pair decoder), set by the loop before the
        first epoch (from the estimator's ``_make_head``, or the fitted one under warm
        start) and optimised with the network.
    """

    n_outputs: int
    n_targets: int
    loss_mask: np.ndarray
    head: torch.nn.Module | None = None

    def extend_batch(self, nodes: np.ndarray) -> np.ndarray:
        """The nodes of a training step, given the sampler's batch (mini-batch mode only).

        Parameters
        ----------
        nodes : ndarray of shape (b,)
            The sampler's batch.

        Returns
        -------
        ndarray
            ``nodes``, and any nodes the task adds after them.
        """
        return nodes

    def loss(self, logits: Tensor, nodes: Tensor) -> tuple[Tensor, int]:
        """The summed loss over the batch's targets and the number of its terms.

        Parameters
        ----------
        logits : Tensor of shape (b, n_outputs)
            The network's output for the step's nodes.
        nodes : Tensor of shape (b,)
            The step's node ids.

        Returns
        -------
        loss : Tensor
            A scalar; the loop divides it by the per-batch share of ``n_targets``.
        count : int
            Its number of terms (0: the step has no backward pass).
        """
        raise NotImplementedError

    def val_score(self, logits: Tensor, nodes: np.ndarray) -> float:
        """Validation score (greater is better) of the outputs of the validation nodes.

        Parameters
        ----------
        logits : Tensor of shape (len(nodes), n_outputs)
            Eval-mode outputs of ``nodes``.
        nodes : ndarray
            The validation nodes, sorted.

        Returns
        -------
        float
        """
        raise NotImplementedError


class Callback:
    """Hooks into a fit: pass instances as ``fit(..., callbacks=[...])``.

    Each method receives the running `FitLoop` (its ``model``, ``tables``, ``history``,
    ``epoch`` and `FitLoop.predict`); the defaults do nothing. A callback may end a fit after
    the current epoch by setting ``fit.stop = True``. ``verbose`` adds a `ProgressBar`.

    Examples
    --------
    >>> import numpy as np
    >>> from skvqgnn import Callback, VQGNNClassifier
    >>> from skvqgnn.datasets import make_csbm
    >>> class Losses(Callback):
    ...     def __init__(self):
    ...         self.losses = []
    ...     def on_epoch_end(self, fit, record):
    ...         self.losses.append(record["loss"])
    >>> A, X, y, _ = make_csbm(200, 2, random_state=0)
    >>> losses = Losses()
    >>> clf = VQGNNClassifier(batch_size=50, n_codewords=16, max_epochs=3, random_state=0)
    >>> clf = clf.fit(A, X, y, callbacks=[losses])
    >>> len(losses.losses)
    3
    """

    def on_fit_start(self, fit: FitLoop) -> None:
        """After the set-up (graph structures, batches, codebook initialisation).

        Parameters
        ----------
        fit : FitLoop
        """

    def on_epoch_start(self, fit: FitLoop) -> None:
        """Before the first batch of epoch ``fit.epoch``.

        Parameters
        ----------
        fit : FitLoop
        """

    def on_step_start(self, fit: FitLoop, batch_nodes: np.ndarray) -> None:
        """Before a training step.

        Parameters
        ----------
        fit : FitLoop
        batch_nodes : ndarray
            The step's nodes: the sampler's batch, extended by the task (a link predictor adds
            partner and negative nodes).
        """

    def on_step_end(self, fit: FitLoop, batch_nodes: np.ndarray, n_terms: int) -> None:
        """After a step's forward and backward passes, optimiser step (when due) and codebook
        updates.

        Parameters
        ----------
        fit : FitLoop
        batch_nodes : ndarray
            The step's nodes.
        n_terms : int
            The number of loss terms of the step (0: no backward pass).
        """

    def on_epoch_end(self, fit: FitLoop, record: dict[str, Any]) -> None:
        """After an epoch and its evaluation.

        Parameters
        ----------
        fit : FitLoop
        record : dict
            The epoch's entry of ``history_``.
        """

    def on_fit_end(self, fit: FitLoop) -> None:
        """After the last epoch (also after Ctrl-C), before the fitted attributes are set.

        Parameters
        ----------
        fit : FitLoop
        """


class ProgressBar(Callback):
    """A tqdm bar over the epochs, with the loss and validation score (``verbose=1``).

    Parameters
    ----------
    desc : str
        The bar's label.
    """

    def __init__(self, desc: str):
        self.desc = desc
        self.bar = None

    def on_fit_start(self, fit: FitLoop) -> None:  # noqa: D102
        from tqdm.auto import tqdm

        self.bar = tqdm(total=fit.max_epochs, desc=self.desc, unit="epoch")

    def on_epoch_end(self, fit: FitLoop, record: dict[str, Any]) -> None:  # noqa: D102
        self.bar.update(1)
        shown = {k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "val_score")}
        self.bar.set_postfix(shown)

    def on_fit_end(self, fit: FitLoop) -> None:  # noqa: D102
        if self.bar is not None:
            self.bar.close()


@dataclass
class Snapshot:
    """The network (codebooks included) and head of the best validation epoch.

    The assignment tables, O(n) each, are not copied: the end of fit reassigns every node's
    feature codes from the kept network anyway (``refresh_codebooks``), so the tables of the
    best epoch would be overwritten; gradient codes are used by training steps only."""

    model: VQGNN
    head: torch.nn.Module | None = None


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


class FitLoop:
    """One fit: its set-up, its steps and its end, each a method, with callbacks between.

    `run` is `start`, then `epoch_pass` until ``max_epochs`` or early stopping, then
    `finish`. An epoch is, per step of the ``strategy`` (one batch; data-parallel, one batch
    per rank), `step` (forward and backward) and the codebook search of each batch,
    `synchronise` (data-parallel: one all-reduce of the gradients and the codebook statistics),
    `update` (one optimiser step every ``accumulate_batches`` batches) and `update_codebooks`
    (the EMA step; data-parallel, after an all-gather of the codes); then `evaluate` on the
    validation nodes and `keep_if_best`, which may take a `Snapshot` of the network.

    The estimator's ``fit`` builds and runs one; callbacks receive it.

    Parameters
    ----------
    estimator : BaseVQGNN
        Whose parameters the fit follows and whose fitted attributes `finish` sets.
    task : Task
    graph : Graph or GraphShard
        The graph trained on; a `GraphShard` for a partitioned fit (each process holds its
        part of the graph, ``skvqgnn.shards``).
    val_nodes : ndarray
        Nodes scored by the task after every epoch (sorted; may be empty; a partitioned fit:
        this process's, the score averaged over the processes).
    seed : int
        Seeds the batches, the codebook initialisation and torch's generator.
    callbacks : list of Callback
        Notified in order.
    strategy : skvqgnn.distributed.Strategy, default=None
        How the batches are shared among processes (`skvqgnn.distributed`); ``None``: one
        process, one batch per step.

    Attributes
    ----------
    data : GraphData
        The graph's convolutions, prepared for the backbone.
    sampler : NodeSampler
    model : VQGNN
    tables : list of AssignmentTable
        Per VQ layer, the feature and gradient codes of every node (empty in full-graph mode).
    input_table : AssignmentTable or None
        Codes of the raw features (attention backbones' input codebook).
    history : list of dict
        ``history_`` so far (a warm start continues the previous one).
    traces : list of LayerTrace
        The last step's trace of every VQ layer (its inputs, messages and, after the backward
        pass, their gradients), for callbacks that measure a step.
    epoch : int
        Index of the current epoch in this fit.
    max_epochs : int
    stop : bool
        Set to end the fit after the current epoch.
    """

    def __init__(
        self,
        estimator: Any,
        task: Task,
        graph: Graph,
        val_nodes: np.ndarray,
        seed: int,
        callbacks: Sequence[Callback] = (),
        strategy: Strategy | None = None,
    ):
        self.estimator, self.task, self.graph = estimator, task, graph
        self.val_nodes, self.seed, self.callbacks = val_nodes, seed, list(callbacks)
        self.strategy = Local() if strategy is None else strategy
        self.device = estimator._device()
        self.max_epochs = estimator.max_epochs
        self.epoch = 0
        self.stop = False
        self.best: tuple[float, Snapshot | None] = (-np.inf, None)
        self.stale = 0

    # -- set-up ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Graph structures, batches, network (new or warm-started), codebooks, optimiser."""
        est, graph, device = self.estimator, self.graph, self.device
        name = type(est).__name__
        verbose = est.verbose if self.strategy.rank == 0 else 0  # progress from rank 0 only
        with _stage(verbose, name, f"graph structures ({graph.n_nodes:,} nodes)"):
            self.data = est._graph_data(graph)
        self.full_graph = est._effective_batch_size(graph.n_nodes) >= graph.n_nodes
        partitioned = isinstance(graph, GraphShard)
        if partitioned:
            self._check_partition(graph)
        what = "batches" if self.full_graph or est.sampler == "random" else "METIS partition"
        with _stage(verbose, name, what):
            self.sampler = est._sampler_for(graph, self.seed)
        if not self.full_graph and est.n_codewords > graph.n_nodes:
            raise ValueError(
                f"n_codewords={est.n_codewords} exceeds the {graph.n_nodes} nodes of the graph: "
                "a codebook cannot use more codewords than there are nodes; use n_codewords <= "
                f"{graph.n_nodes} (or batch_size=None for full-graph training)"
            )
        if (
            not partitioned
            and self.strategy.world_size > 1
            and graph.n_nodes <= self.sampler.batch_size
        ):
            raise ValueError(
                f"data-parallel training on {self.strategy.world_size} processes needs "
                "mini-batches, but batch_size covers the whole graph: set batch_size so that "
                f"the graph has at least {self.strategy.world_size} batches"
            )
        self.sharing = None
        if partitioned:
            self.sharing = Sharing(self.strategy, graph)
            # which nodes have a loss term, every part's: the output layer's backward messages
            # come from those receivers only, wherever they are
            self.task.loss_mask = self.sharing.gather(self.task.loss_mask)
        # every rank draws the same batches, re-seeds and network (a partitioned fit's ranks
        # initialise the codebooks together); dropout differs per rank
        self.rng = np.random.default_rng(self.seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        self.position = np.full(graph.n_nodes, -1, dtype=np.int32)  # make_batch's scratch

        self.reuse = est.warm_start and hasattr(est, "model_")
        fresh = est._build_model(graph.n_features, self.task.n_outputs, self.data.kinds)
        if self.reuse:
            _check_same_structure(est.model_, fresh)
            model = est.model_.to(device)
            est._apply_settings(model)
        else:
            model = fresh.to(device)
        model.sparse_backend = resolve_backend(est.sparse_backend)
        self.n_batches = getattr(
            self.sampler, "n_batches", max(1, math.ceil(graph.n_nodes / self.sampler.batch_size))
        )
        for cb in model.codebooks:  # gradient codewords average over the last epoch
            cb.grad_decay = 1.0 - 1.0 / self.n_batches
        self.model = model
        self.tables: list[AssignmentTable] = []
        self.input_table: AssignmentTable | None = None
        if self.full_graph:  # one batch: no message is quantised (codebooks filled at the end)
            pass
        elif self.reuse and est.graph_fingerprint_ == graph.fingerprint and est.tables_:
            self.tables, self.input_table = est.tables_, est.input_table_
        else:
            levels = len(model.codebooks) + (model.input_codebook is not None)
            with _stage(verbose, name, f"k-means of {levels} codebook(s)"):
                self.tables, self.input_table = initialise_codebooks(
                    model, self.data, self.sampler, self.gen, device, self.sharing
                )

        if self.strategy.rank:  # rank 0 goes on with the stream of a one-process fit
            torch.manual_seed(rank_seed(self.seed, self.strategy.rank))
        head = est.head_ if self.reuse and getattr(est, "head_", None) is not None else None
        if head is not None:
            est._check_same_head(head)
        head = est._make_head() if head is None else head
        self.task.head = None if head is None else head.to(device)
        self.parameters = [*model.parameters(), *(() if head is None else head.parameters())]
        self.optimiser = torch.optim.Adam(
            self.parameters, lr=est.learning_rate, weight_decay=est.weight_decay
        )
        self.norm = max(1.0, self.task.n_targets / self.n_batches)
        self.history = list(est.history_) if self.reuse and hasattr(est, "history_") else []
        self.first_epoch = len(self.history)
        kinds = self.data.kinds
        self.backward = [False] * len(kinds) if self.full_graph else est._backward_flags(kinds)
        self.group = 0 if est.accumulate_batches == "epoch" else est.accumulate_batches
        self.vq_sq = np.zeros(len(self.tables))
        self.vq_norm = np.zeros(len(self.tables))
        self.validated = len(self.val_nodes) > 0
        if partitioned:  # every process scores, or none: the score is their average
            counts = self.strategy.all_reduce(torch.tensor([float(len(self.val_nodes))]))
            self.validated = bool(counts[0] > 0)
        if self.strategy.world_size > 1:
            self._agree_on_start()
        self.codebooks = CodebookUpdates(
            model, self.tables, self.gen, self.task.loss_mask, self.strategy
        )

    def _check_partition(self, shard: GraphShard) -> None:
        """A partitioned fit: one process per part under ``torchrun``, or every part in one."""
        strategy, n_parts = self.strategy, shard.n_parts
        if self.full_graph:
            raise ValueError(
                "a partitioned graph trains in mini-batches: set batch_size (batch_size=None "
                "would put every node of the graph in one batch)"
            )
        if strategy.world_size > 1:
            if strategy.world_size != n_parts or shard.ranks != [strategy.rank]:
                raise ValueError(
                    f"rank {strategy.rank} of {strategy.world_size} holds parts {shard.ranks} of "
                    f"a partition into {n_parts}: launch one process per part (torchrun "
                    f"--nproc-per-node {n_parts}), each loading its own with load_shard(folder)"
                )
        elif len(shard.ranks) != n_parts:
            raise ValueError(
                f"one process holds parts {shard.ranks} of a partition into {n_parts}: train "
                "on it with one process per part (torchrun), or load every part in this one "
                "(load_shard(folder, 'all'))"
            )
        elif getattr(strategy, "simulated", n_parts) != n_parts:
            raise ValueError(
                f"Simulated({strategy.simulated}) on a partition into {n_parts}: simulate "
                f"{n_parts} ranks, one per part"
            )

    def _agree_on_start(self) -> None:
        """Data-parallel: check that every rank fits the same graph, targets and seed (a
        ``ValueError`` names what differs), then give every rank rank 0's network and
        assignment tables, so that they start from one state whatever their hardware."""
        graph, task, strategy = self.graph, self.task, self.strategy
        part = getattr(self.sampler, "part", None)
        checks = {  # a partitioned fit's loss mask is every part's by now (start)
            "the graph (A and X)": _digest(graph.fingerprint),
            "the training targets (y)": _digest(np.packbits(task.loss_mask).tobytes()),
            "the seed (random_state)": self.seed,
            "the METIS partition of the cluster sampler": _digest(
                b"" if part is None else np.ascontiguousarray(part).tobytes()
            ),
        }
        values = np.array(list(checks.values()), dtype=np.int64)
        for rank, other in enumerate(strategy.all_gather(values)):
            differs = [name for name, a, b in zip(checks, values, other, strict=True) if a != b]
            if differs:
                raise ValueError(
                    f"data-parallel fit: rank {strategy.rank} and rank {rank} differ in "
                    f"{', '.join(differs)}; every rank must call fit with the same arguments "
                    "(and an integer random_state, or None, which rank 0 draws for all)"
                )
        state = [*self.model.state_dict().values()]
        if self.task.head is not None:
            state += [*self.task.head.state_dict().values()]
        for tensor in state:
            strategy.broadcast(tensor, 0)
        # the tables are O(n): compared by digest, sent only where a rank's differ from rank
        # 0's (in place, as the signed integers of their width)
        tables = [*self.tables, *([self.input_table] if self.input_table else [])]
        arrays = [a for t in tables for a in (t.codes, t.grad_codes)]
        digests = np.array([_digest(memoryview(a).cast("B")) for a in arrays], dtype=np.int64)
        everyone = strategy.all_gather(digests)
        differ = np.any([d != everyone[0] for d in everyone], axis=0)
        for i in np.flatnonzero(differ):
            a = arrays[i]
            strategy.broadcast(torch.from_numpy(a.view(a.dtype.str.replace("u", "i"))), 0)
        for table in tables:
            table.replace(table.codes, table.grad_codes)  # recount the usage

    # -- training --------------------------------------------------------------------------------
    def _set_mode(self, training: bool) -> None:
        self.model.train(training)
        if self.task.head is not None:
            self.task.head.train(training)

    def step(self, batch_nodes: np.ndarray, stats: _EpochStats) -> tuple[Any, list, int]:
        """Forward (Eq. 6) and backward (Eq. 7) of one batch, its gradient summed into the
        parameters'.

        Parameters
        ----------
        batch_nodes : ndarray
            The step's nodes.
        stats : _EpochStats
            The epoch's statistics, to which the step's loss is added.

        Returns
        -------
        batch : Batch
        traces : list of LayerTrace
            Per VQ layer, what the codebook updates need.
        count : int
            The number of loss terms.
        """
        task, device = self.task, self.device
        batch = make_batch(
            self.data,
            batch_nodes,
            self.tables,
            device,
            self.backward,
            task.loss_mask,
            self.input_table,
            self.position,
        )
        logits, traces = self.model(batch, blue=any(self.backward))
        self.traces = traces
        loss, count = task.loss(logits, batch.nodes.to(device))
        if count:
            (loss / self.norm).backward()
        stats.loss += float(loss.detach()) if count else 0.0
        stats.count += count
        return batch, traces, count

    def update(self, grouped: int, with_loss: bool) -> None:
        """One optimiser step on the mean gradient of the ``grouped`` batches summed into the
        parameters' gradients (none when no batch had a loss term). Dividing the sum here,
        not each batch's loss, leaves the gradient codewords as they are without grouping.
        Data-parallel, the gradients are those summed over the ranks by `synchronise`, and
        ``grouped`` counts the batches of every rank.

        Parameters
        ----------
        grouped : int
            The number of batches summed.
        with_loss : bool
            Whether one of them had a loss term.
        """
        if not with_loss:
            return
        if grouped > 1:
            for p in self.parameters:
                if p.grad is not None:
                    p.grad.div_(grouped)
        self.optimiser.step()

    def synchronise(
        self, gradients: bool, with_loss: bool, codebooks: bool = True
    ) -> tuple[bool, bool]:
        """Data-parallel: one all-reduce of what the ranks merge at the end of a step: the
        parameter gradients (when ``gradients``: an optimiser step is due), the statistics of
        the codebook updates, the length of each rank's codes (for their all-gather), whether
        a rank had a loss term and whether one was interrupted. One process: nothing to do.

        A parameter without a gradient on a rank contributes zeros there; it gets one if any
        rank has one.

        Parameters
        ----------
        gradients : bool
            Whether to sum the parameter gradients.
        with_loss : bool
            Whether one of this rank's batches since the last optimiser step had a loss term.
        codebooks : bool, default=True
            Whether the step's codebook statistics are summed (not after an epoch's last step).

        Returns
        -------
        with_loss : bool
            Over the ranks.
        interrupted : bool
            Whether a rank was interrupted (Ctrl-C) during the step.
        """
        strategy = self.strategy
        if strategy.world_size == 1:
            return with_loss, False
        params = self.parameters
        parts: list[Tensor] = []
        if gradients:
            has = [float(p.grad is not None) for p in params]
            parts += [torch.tensor(has, dtype=torch.float64, device=self.device)]
            parts += [
                (torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1).double()
                for p in params
            ]
        lengths = torch.zeros(strategy.world_size, dtype=torch.float64, device=self.device)
        codebooks = codebooks and bool(self.tables)
        if codebooks:
            parts += [t.reshape(-1) for t in self.codebooks.statistics()]
            lengths[strategy.rank] = len(self.codebooks.pack())
        control = torch.tensor([float(with_loss), float(self.interrupted)], dtype=torch.float64)
        flat = strategy.all_reduce(torch.cat([*parts, lengths, control.to(self.device)]))
        offset = 0
        if gradients:
            seen = flat[: len(params)].tolist()
            offset = len(params)
            for p, any_rank in zip(params, seen, strict=True):
                n = p.numel()
                if any_rank > 0:
                    p.grad = flat[offset : offset + n].view_as(p).to(p.dtype)
                offset += n
        if codebooks:
            offset = self.codebooks.load_statistics(flat, offset)
            self.codebooks.lengths = [int(n) for n in flat[offset : offset + len(lengths)]]
        with_loss, interrupted = (bool(v > 0) for v in flat[-2:].tolist())
        return with_loss, interrupted

    def update_codebooks(self, stats: _EpochStats) -> None:
        """The EMA updates of the step's codewords and codes (none in full-graph mode), merged
        over its batches (and ranks, after `synchronise`) by `CodebookUpdates`.

        Parameters
        ----------
        stats : _EpochStats
        """
        if self.tables:
            self.codebooks.apply(stats)

    def epoch_pass(self) -> dict[str, Any]:
        """One epoch over the sampler's batches; its ``history_`` record (before evaluation).

        Per step of the strategy (one batch; data-parallel: one batch per rank): `step` and the
        codebook search of each batch, `update` when ``accumulate_batches`` batches are summed
        (the last update of the epoch takes the batches left), `update_codebooks`, with the
        callbacks' ``on_step_start`` and ``on_step_end`` around each batch.

        Returns
        -------
        dict
        """
        t0 = time.perf_counter()
        self._set_mode(True)
        stats = _EpochStats(len(self.tables))
        distributed = self.strategy.world_size > 1
        grouped, with_loss = 0, False  # batches of the current update, whether one had a loss
        for batches, in_step in self.strategy.steps(self.sampler.epoch(self.rng)):
            if grouped == 0:
                self.optimiser.zero_grad(set_to_none=True)
            done = []
            for batch_nodes in batches:
                if not self.full_graph:
                    batch_nodes = self.task.extend_batch(batch_nodes)
                with self._interruptible(distributed):
                    for hook in self.callbacks:
                        hook.on_step_start(self, batch_nodes)
                _, traces, count = self.step(batch_nodes, stats)
                with_loss |= bool(count)
                if self.tables:
                    backward = bool(count) and any(self.backward)
                    self.codebooks.collect(batch_nodes, traces, backward, stats)
                done.append((batch_nodes, count))
            grouped += in_step
            due = bool(self.group) and grouped >= self.group
            with_loss, interrupted = self.synchronise(due, with_loss)
            if due:
                self.update(grouped, with_loss)
                grouped, with_loss = 0, False
            self.update_codebooks(stats)
            for batch_nodes, count in done:
                with self._interruptible(distributed):
                    for hook in self.callbacks:
                        hook.on_step_end(self, batch_nodes, count)
            if interrupted:
                raise KeyboardInterrupt
        if grouped:
            if distributed:
                with_loss, _ = self.synchronise(True, with_loss, codebooks=False)
            self.update(grouped, with_loss)
        if self.tables:
            self.codebooks.finish(stats)
        record = stats.summary(self.first_epoch + self.epoch)
        record["time"] = time.perf_counter() - t0
        if distributed:
            self._merge_epoch(stats, record)
        _check_finite(record["loss"], self.parameters, self.first_epoch + self.epoch)
        self.vq_sq, self.vq_norm = stats.vq_sq, stats.vq_norm
        return record

    @contextlib.contextmanager
    def _interruptible(self, distributed: bool) -> Iterator[None]:
        """Data-parallel: a ``KeyboardInterrupt`` raised by a callback marks this rank as
        interrupted (the ranks stop together at the end of the step) instead of leaving the
        others waiting in a collective."""
        if not distributed:
            yield
            return
        try:
            yield
        except KeyboardInterrupt:
            self.strategy.interrupted = True

    @property
    def interrupted(self) -> bool:
        """Whether this rank was interrupted during the step (data-parallel only)."""
        return bool(getattr(self.strategy, "interrupted", False))

    def _merge_epoch(self, stats: _EpochStats, record: dict[str, Any]) -> None:
        """The epoch's record over every rank: losses and per-rank measures summed, the time of
        the slowest rank."""
        L = len(self.tables)
        local = [stats.loss, stats.count, *stats.vq_sq, *stats.vq_norm, *stats.blue_norm]
        flat = self.strategy.all_reduce(torch.tensor(local, dtype=torch.float64))
        merged = flat.tolist()
        stats.loss, stats.count = merged[0], int(merged[1])
        stats.vq_sq = np.array(merged[2 : 2 + L])
        stats.vq_norm = np.array(merged[2 + L : 2 + 2 * L])
        stats.blue_norm = merged[2 + 2 * L :]
        time_taken = record["time"]
        record.clear()
        record.update(stats.summary(self.first_epoch + self.epoch))
        slowest = self.strategy.all_reduce(torch.tensor([time_taken]), op="max")
        record["time"] = float(slowest[0])

    def evaluate(self) -> float:
        """Validation score of the live model (VQ inference over the training codes).

        Returns
        -------
        float
        """
        self._set_mode(False)
        score = 0.0
        if len(self.val_nodes):
            logits = vq_inference(
                self.model,
                self.data,
                self.tables,
                self.input_table,
                self.sampler,
                self.val_nodes,
                self.device,
            )
            score = self.task.val_score(logits, self.val_nodes)
        if self.sharing is not None:  # each process scored its nodes: their weighted mean
            n = float(len(self.val_nodes))
            total = self.sharing.sum(torch.tensor([score * n, n], dtype=torch.float64))
            score = float(total[0] / total[1])
        elif self.strategy.world_size > 1:  # rank 0's, so that early stopping agrees exactly
            score = float(self.strategy.broadcast(torch.tensor([score], dtype=torch.float64), 0))
        return score

    def keep_if_best(self, score: float) -> None:
        """Early stopping's bookkeeping: a `Snapshot` of an improving epoch, else one more
        epoch without improvement.

        Parameters
        ----------
        score : float
            The epoch's validation score.
        """
        if score > self.best[0] + 1e-12:
            snapshot = None
            if self.estimator.early_stopping:  # the best epoch's model is the one kept
                snapshot = Snapshot(copy.deepcopy(self.model), copy.deepcopy(self.task.head))
            self.best = (score, snapshot)
            self.stale = 0
        else:
            self.stale += 1

    def predict(self, nodes: np.ndarray) -> Tensor:
        """Outputs of ``nodes`` by the live state, as the end of fit would compute them.

        VQ inference after the eval-mode refresh of the codebooks (on copies, so that training
        goes on unchanged), or exact inference in full-graph mode. For callbacks that follow
        accuracy over the epochs.

        Parameters
        ----------
        nodes : ndarray
            Node ids.

        Returns
        -------
        Tensor of shape (len(nodes), n_outputs)
            On the CPU.
        """
        was_training = self.model.training
        self._set_mode(False)
        try:
            if not self.tables:
                return torch.from_numpy(exact_layers(self.model, self.data, self.device)[nodes])
            model, tables = copy.deepcopy(self.model), copy.deepcopy(self.tables)
            refresh_codebooks(
                model, self.data, tables, self.input_table, self.sampler, self.device, self.sharing
            )
            return vq_inference(
                model, self.data, tables, self.input_table, self.sampler, nodes, self.device
            )
        finally:
            self._set_mode(was_training)

    def run(self) -> None:
        """Set up, train epoch by epoch (Ctrl-C keeps what was trained), finish."""
        with self.strategy.deferred_interrupt():
            self._run()

    def _run(self) -> None:
        est = self.estimator
        distributed = self.strategy.world_size > 1
        self.start()
        for hook in self.callbacks:
            hook.on_fit_start(self)
        try:
            for epoch in range(self.max_epochs):
                self.epoch = epoch
                for hook in self.callbacks:
                    hook.on_epoch_start(self)
                record = self.epoch_pass()
                if self.validated:
                    record["val_score"] = self.evaluate()
                    self.keep_if_best(record["val_score"])
                self.history.append(record)
                with self._interruptible(distributed):
                    for hook in self.callbacks:
                        hook.on_epoch_end(self, record)
                if distributed:  # a callback's stop or a Ctrl-C on one rank stops them all
                    flags = torch.tensor([float(self.stop), float(self.interrupted)])
                    flags = self.strategy.all_reduce(flags, op="max")
                    self.stop = bool(flags[0] > 0)
                    if flags[1] > 0:
                        raise KeyboardInterrupt
                if self.stop or (est.early_stopping and self.stale >= est.n_iter_no_change):
                    break
        except KeyboardInterrupt:
            warnings.warn(
                f"fit interrupted after {len(self.history)} epochs; keeping the model "
                + ("of the best validation epoch" if self.best[1] is not None else "as it is"),
                RuntimeWarning,
                stacklevel=6,  # the caller of fit (_run, run, _fit_graph, fit, the fit wrapper)
            )
        finally:
            for hook in self.callbacks:
                hook.on_fit_end(self)
        self.finish()

    # -- end -------------------------------------------------------------------------------------
    def finish(self) -> None:
        """The best epoch's network under early stopping, codebooks for inference, and the
        fitted attributes of the estimator."""
        est = self.estimator
        _warn_if_diverging(self.history[self.first_epoch :], est.learning_rate, stacklevel=8)
        model, head = self.model, self.task.head
        if est.early_stopping and self.best[1] is not None:
            model, head = self.best[1].model, self.best[1].head
            self.model = model
        if self.tables:
            refresh_codebooks(
                model,
                self.data,
                self.tables,
                self.input_table,
                self.sampler,
                self.device,
                self.sharing,
            )
        elif model.codebooks:
            # full-graph training (the graph fits in one batch) never touched the codebooks:
            # fill them from the trained network, so that VQ inference on a larger graph
            # quantises with real codewords, not zeros
            self.tables, self.input_table = initialise_codebooks(
                model, self.data, self.sampler, self.gen, self.device
            )
        self.task.head = None
        model.eval()
        est.model_ = model.cpu()
        est.head_ = None if head is None else head.eval().cpu()
        est.tables_ = self.tables
        est.input_table_ = self.input_table
        est.graph_fingerprint_ = self.graph.fingerprint
        est.history_ = self.history
        est.n_iter_ = len(self.history)
        scores = [r["val_score"] for r in self.history[self.first_epoch :] if "val_score" in r]
        est.best_validation_score_ = max(scores) if scores else None
        with np.errstate(invalid="ignore", divide="ignore"):
            est.vq_error_ = np.sqrt(self.vq_sq / self.vq_norm) if len(self.tables) else np.zeros(0)
        est._fit_seed_ = self.seed
        est.partition_ = getattr(self.sampler, "part", None)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of torch's generator (dropout) on process ``rank``: ``seed`` on rank 0, as in a
    single-process fit; a seed derived from both elsewhere."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _digest(data: str | bytes | memoryview) -> int:
    """A 63-bit digest of ``data``, to compare across processes."""
    import hashlib

    raw = data.encode() if isinstance(data, str) else data
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little") >> 1


# -- the codebook updates of a step ---------------------------------------------------------------
class CodebookUpdates:
    """The codebook updates of a step's batches, searched against the same codebooks.

    `collect` takes each batch of the step (its feature codes, and its gradient codes where the
    gradient is known, with the statistics of both EMA updates and of the calibration), summed
    over the step's batches; data-parallel, `FitLoop.synchronise` sums them over the ranks (one
    all-reduce, with the gradients); `apply` exchanges the codes (one all-gather), takes one EMA
    step per codebook, writes the codes into the tables in batch order and re-seeds unused
    codewords. With one batch per step this is
    the paper's per-batch update (assign, then EMA step).

    Parameters
    ----------
    model : VQGNN
    tables : list of AssignmentTable
    gen : torch.Generator
        For the re-seeding (the same on every process).
    loss_mask : ndarray of shape (n_nodes,), bool
        The nodes with a loss term (the only ones whose output-layer gradient is known).
    strategy : skvqgnn.distributed.Strategy
    """

    def __init__(
        self,
        model: VQGNN,
        tables: list[AssignmentTable],
        gen: torch.Generator,
        loss_mask: np.ndarray,
        strategy: Strategy,
    ):
        self.model, self.tables, self.gen = model, tables, gen
        self.loss_mask, self.strategy = loss_mask, strategy
        self.begin()

    def begin(self) -> None:
        """Start a step: no batch collected."""
        self.stats = [cb.empty_statistics() for cb in self.model.codebooks]
        self.pending: list[dict[str, Any]] = []
        self.packed: np.ndarray | None = None
        self.lengths: list[int] | None = None  # of every rank's pack, when synchronised

    @torch.no_grad()
    def collect(
        self, batch_nodes: np.ndarray, traces: list[LayerTrace], backward: bool, epoch: _EpochStats
    ) -> None:
        """Search a batch's codes against the step's codebooks and add its statistics.

        Feature codes come from the inputs alone; gradient codes from inputs and gradients, and
        only for rows whose gradient is known: none when the step had no backward pass, and in
        the output layer only the nodes with a loss term (the gradient of the others is exactly
        zero, and they are never taken as receivers there).

        Parameters
        ----------
        batch_nodes : ndarray
            The batch's nodes, in the order of the traces' rows.
        traces : list of LayerTrace
            The batch's traces, one per VQ layer.
        backward : bool
            Whether the batch had a backward pass (gradients in the traces).
        epoch : _EpochStats
            Receives the norm of the backward messages.
        """
        last = len(self.tables) - 1
        levels = []
        for level, (cb, trace, table) in enumerate(
            zip(self.model.codebooks, traces, self.tables, strict=True)
        ):
            x = cb.split(trace.x.detach())  # (b, P, D)
            codes = cb.assign(x)
            cb.feature_statistics(self.stats[level], x, codes)
            entry: dict[str, Any] = {"x": x, "codes": codes, "rows": None}
            if backward:
                known = self.loss_mask[batch_nodes] if level == last else None
                rows = np.arange(len(batch_nodes)) if known is None else np.flatnonzero(known)
                if len(rows):
                    g, aux = gradient_channels(trace)
                    index = torch.from_numpy(rows).to(x.device)
                    xr, g = x[index], cb.split(g[:, index])  # (r, P, D), (S, r, P, D)
                    aux = None if aux is None else aux[:, index]
                    nodes = batch_nodes[rows]
                    stale = torch.from_numpy(table.grad_codes[nodes].astype(np.int64))
                    cb.calibration_statistics(self.stats[level], g, stale.to(x.device))
                    grad_codes = cb.assign_gradients(xr, g, aux)
                    cb.gradient_statistics(self.stats[level], xr, g, grad_codes, aux)
                    entry.update(rows=rows, grad_codes=grad_codes, gx=xr, g=g, aux=aux)
            if trace.blue is not None:
                epoch.blue_norm[level] += float(trace.blue.norm())
            levels.append(entry)
        self.pending.append({"nodes": batch_nodes, "levels": levels})

    def statistics(self) -> list[Tensor]:
        """The step's statistics so far, every codebook's in order (float64): what the ranks
        sum (`FitLoop.synchronise`)."""
        return [t for stats in self.stats for t in stats.values()]

    def load_statistics(self, flat: Tensor, offset: int) -> int:
        """Take the summed statistics from ``flat``, starting at ``offset``; returns the offset
        after them."""
        for t in self.statistics():
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()
        return offset

    def _mine(self) -> list[dict[str, Any]]:
        """This process's collected batches: their nodes and codes (numpy)."""
        return [
            {
                "nodes": p["nodes"],
                "codes": [e["codes"].cpu().numpy() for e in p["levels"]],
                "rows": [e["rows"] for e in p["levels"]],
                "grad_codes": [
                    None if e["rows"] is None else e["grad_codes"].cpu().numpy()
                    for e in p["levels"]
                ],
                "rank": self.strategy.rank,
                "index": i,
            }
            for i, p in enumerate(self.pending)
        ]

    def pack(self) -> np.ndarray:
        """This process's batches and codes as one int64 array, for the all-gather (made once
        per step)."""
        if self.packed is not None:
            return self.packed
        packed = [np.array([len(self.pending)], dtype=np.int64)]
        for batch in self._mine():
            b = len(batch["nodes"])
            counts = [-1 if r is None else len(r) for r in batch["rows"]]
            packed += [np.array([b, *counts], dtype=np.int64), batch["nodes"]]
            for codes, rows, grad in zip(
                batch["codes"], batch["rows"], batch["grad_codes"], strict=True
            ):
                packed.append(codes.reshape(-1))
                if rows is not None:
                    packed += [rows, grad.reshape(-1)]
        self.packed = np.concatenate(packed).astype(np.int64)
        return self.packed

    def _batches(self) -> list[dict[str, Any]]:
        """Every process's collected batches in rank order: their nodes and codes (numpy), the
        rank that holds each and its index there."""
        if self.strategy.world_size == 1:
            return self._mine()
        widths = [cb.n_slices for cb in self.model.codebooks]
        gathered = self.strategy.all_gather(self.pack(), self.lengths)
        batches = []
        for rank, array in enumerate(gathered):
            pos = 1
            for index in range(int(array[0])):
                b = int(array[pos])
                counts = array[pos + 1 : pos + 1 + len(widths)]
                pos += 1 + len(widths)
                batch = {"rank": rank, "index": index, "codes": [], "rows": [], "grad_codes": []}
                batch["nodes"] = array[pos : pos + b]
                pos += b
                for P, r in zip(widths, counts, strict=True):
                    batch["codes"].append(array[pos : pos + b * P].reshape(b, P))
                    pos += b * P
                    if r < 0:
                        batch["rows"].append(None)
                        batch["grad_codes"].append(None)
                        continue
                    batch["rows"].append(array[pos : pos + r])
                    batch["grad_codes"].append(array[pos + r : pos + r + r * P].reshape(r, P))
                    pos += r + r * P
                batches.append(batch)
        return batches

    @torch.no_grad()
    def apply(self, epoch: _EpochStats) -> None:
        """Take one EMA step per codebook from the step's statistics (summed over the ranks by
        `FitLoop.synchronise`), write every batch's codes (all-gathered from the ranks), re-seed
        unused codewords; then `begin` the next step.

        Parameters
        ----------
        epoch : _EpochStats
            Receives the step's codebook statistics.
        """
        batches = self._batches()
        for level, (cb, table) in enumerate(zip(self.model.codebooks, self.tables, strict=True)):
            before = cb.codewords  # a new tensor (sums over sizes), not a view of a buffer
            cb.apply_statistics(self.stats[level])
            for batch in batches:
                codes = batch["codes"][level]
                epoch.changed[level] += table.set(batch["nodes"], codes.astype(table.codes.dtype))
                rows = batch["rows"][level]
                if rows is not None and len(rows):
                    grad = batch["grad_codes"][level].astype(table.codes.dtype)
                    table.set_gradients(batch["nodes"][rows], grad)
            epoch.reseeded[level] += self._reseed(level, batches)
            self._reseed_gradients(level, batches)
            words = cb.codewords
            epoch.shift[level] += float((words - before).norm())
            for pending in self.pending:
                entry = pending["levels"][level]
                x, quantised = entry["x"], cb.pick(words, entry["codes"])  # (b, P, D)
                epoch.vq_sq[level] += float(((x - quantised) ** 2).sum())
                epoch.vq_norm[level] += float((x**2).sum())
        self.begin()

    @torch.no_grad()
    def finish(self, epoch: _EpochStats) -> None:
        """Record the state the epoch ends in: each codebook's gradient codeword norm and trust
        ratios (read once an epoch, not after every step).

        Parameters
        ----------
        epoch : _EpochStats
        """
        for level, cb in enumerate(self.model.codebooks):
            epoch.grad_norm[level] = float(cb.grad_codewords.norm())
            epoch.trust[level] = cb.grad_trust.tolist()

    def _source(self, batches: list[dict[str, Any]], level: int, gradients: bool):
        """The first batch of the step with rows (with known gradients: ``gradients``), and
        its number of them."""
        for batch in batches:
            rows = batch["rows"][level] if gradients else batch["nodes"]
            if rows is not None and len(rows):
                return batch, len(rows)
        return None, 0

    def _reseed(self, level: int, batches: list[dict[str, Any]]) -> int:
        cb = self.model.codebooks[level]
        source, n_rows = self._source(batches, level, gradients=False)
        dead = torch.from_numpy(self.tables[level].unused()).to(cb.counts.device)
        picked = cb.pick_reseeds(dead, n_rows, self.gen)
        if picked is None:
            return 0
        slice_idx, word_idx, rows = picked
        values = torch.empty(len(rows), cb.codeword_dim, device=cb.counts.device)
        if source["rank"] == self.strategy.rank:
            x = self.pending[source["index"]]["levels"][level]["x"]
            values = x[rows, slice_idx]
        self.strategy.broadcast(values, source["rank"])
        cb.reseed(slice_idx, word_idx, values)
        return len(rows)

    def _reseed_gradients(self, level: int, batches: list[dict[str, Any]]) -> None:
        cb = self.model.codebooks[level]
        source, n_rows = self._source(batches, level, gradients=True)
        dead = torch.from_numpy(self.tables[level].grad_unused()).to(cb.counts.device)
        picked = cb.pick_reseeds(dead, n_rows, self.gen)
        if picked is None:
            return
        slice_idx, word_idx, rows = picked
        n, D, S, A = len(rows), cb.codeword_dim, cb.n_grad, cb.n_aux
        values = torch.empty(n * D + S * n * D + A * n, device=cb.counts.device)
        if source["rank"] == self.strategy.rank:
            entry = self.pending[source["index"]]["levels"][level]
            parts = [entry["gx"][rows, slice_idx], entry["g"][:, rows, slice_idx]]
            if A:
                parts.append(entry["aux"][:, rows])
            values = torch.cat([p.reshape(-1) for p in parts])
        self.strategy.broadcast(values, source["rank"])
        x, g = values[: n * D].view(n, D), values[n * D : n * D + S * n * D].view(S, n, D)
        cb.reseed_gradients(slice_idx, word_idx, x, g, values[n * D + S * n * D :].view(A, n))


def gradient_channels(trace: LayerTrace) -> tuple[Tensor, Tensor | None]:
    """A VQ layer's gradient channels (S, b, f) and auxiliary scalars (n_aux, b) from its
    trace, in the order of ``VQGNN.channels``: each convolution's kind says what of its
    ``∂ℓ/∂M`` is clustered (one channel per fixed convolution; one per attention head, plus
    ``⟨g, M⟩`` and the log normaliser of each head)."""
    channels, aux = [], []
    for kind, m, lse in zip(trace.kinds, trace.messages, trace.lse, strict=True):
        g = torch.zeros_like(m) if m.grad is None else m.grad.detach()
        c, a = kind.gradient_channels(m, g, lse)
        channels.extend(c)
        aux.extend(a)
    return torch.stack(channels), (torch.cat(aux) if aux else None)


# -- checks of a fit -------------------------------------------------------------------------------
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


def _warn_if_diverging(
    history: list[dict[str, Any]], learning_rate: float, stacklevel: int = 4
) -> None:
    """Warn when the loss ended far above where the fit started."""
    if len(history) < 2:
        return
    first, last = history[0]["loss"], history[-1]["loss"]
    if first > 0 and last > _DIVERGENCE * first:
        warnings.warn(
            f"training diverged: the loss rose from {first:.4g} (first epoch) to {last:.4g} "
            f"(last epoch); lower learning_rate (now {learning_rate:g}) or scale the features",
            ConvergenceWarning,
            stacklevel=stacklevel,
        )


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
