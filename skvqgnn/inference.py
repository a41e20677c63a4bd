"""Whole-graph passes of a VQ-GNN network: codebook initialisation, exact and VQ inference.

Each function runs a network (``skvqgnn.layers.VQGNN``) over every node of one graph
(``skvqgnn.convolutions.GraphData``), chunk by chunk or batch by batch, so that the device never
holds more than a chunk or a batch:

* ``exact_layers``: layer-wise full-neighbour inference (the host holds one layer's O(n·f)
  representations);
* ``initialise_codebooks``: k-means of every layer input from the exact layers, before training
  (from VQ inference, batch by batch, for global attention, whose exact layer costs n²);
* ``refresh_codebooks``: the end of a fit, every node re-assigned by its dropout-free input;
* ``vq_inference``: mini-batch VQ inference, codewords for the out-of-batch messages
  (``vq_blocks``: the same, group by group);
* ``assign_new_graph``: the codes of an unseen graph, level by level, for VQ inference on it.

The estimators call them; so can a callback or a benchmark, with the ``FitLoop``'s state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from .convolutions import GraphData, dense_rows, make_batch
from .layers import VQGNN
from .samplers import NodeSampler
from .vq import AssignmentTable, ProductCodebook

__all__ = [
    "assign_new_graph",
    "exact_layers",
    "initialise_codebook",
    "inference_groups",
    "initialise_codebooks",
    "level_inputs",
    "refresh_codebooks",
    "vq_blocks",
    "vq_inference",
]

_KMEANS_SAMPLE = 8192  # rows the k-means of a codebook initialisation is fitted on
_KMEANS_ITERS = 10
_CHUNK_ROWS = 8192  # rows of a layer's inputs held at once by the codebook initialisation
_MOMENT_BYTES = 1 << 22  # float64 bytes of the feature rows `_column_moments` holds at once


def _mean_and_variance(
    total: np.ndarray, square: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and unbiased variance from the columns' sums and sums of squares over
    ``n`` rows (variance 1 for fewer than two rows)."""
    mean = total / max(n, 1)
    if n < 2:
        return mean, np.ones_like(mean)
    return mean, np.maximum(square / n - mean**2, 0.0) * n / (n - 1)


def _column_moments(M: np.ndarray | sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and unbiased variance (f,) of a dense or CSR matrix (1 for one row),
    in float64, from blocks of about `_MOMENT_BYTES` of rows: a float64 copy of a large
    (or memory-mapped) feature matrix would be twice its size."""
    n, f = M.shape
    total, square = np.zeros(f), np.zeros(f)
    step = max(1, _MOMENT_BYTES // (8 * max(f, 1)))
    for lo in range(0, n, step):
        block = M[lo : lo + step]
        if sp.issparse(block):
            block = sp.csr_array(block)
            block.sum_duplicates()
            values = block.data.astype(np.float64)
            total += np.bincount(block.indices, weights=values, minlength=f)
            square += np.bincount(block.indices, weights=values * values, minlength=f)
        else:
            values = np.asarray(block, dtype=np.float64)
            total += values.sum(axis=0)
            square += np.einsum("ij,ij->j", values, values)
    return _mean_and_variance(total, square, n)


def _streamed_moments(
    rows_of: Callable[[np.ndarray], Tensor], n: int, sharing: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and unbiased variance (f,) of the rows ``rows_of`` computes, chunk by
    chunk (1 for one row); with ``sharing``, of this process's rows, the sums summed over the
    processes."""
    total = square = None
    for chunk in _chunks(n, sharing):
        x = rows_of(chunk).double()
        s, q = x.sum(0), (x * x).sum(0)
        total, square = (s, q) if total is None else (total + s, square + q)
    if sharing is not None:
        total, square = sharing.sum(torch.stack([total, square]).cpu())
    return _mean_and_variance(total.cpu().numpy(), square.cpu().numpy(), n)


def _chunks(n: int, sharing: Any = None) -> Iterator[np.ndarray]:
    """Consecutive node ids in chunks of ``_CHUNK_ROWS``: every node, or (``sharing``) this
    process's."""
    start, stop = (0, n) if sharing is None else (sharing.start, sharing.stop)
    for first in range(start, stop, _CHUNK_ROWS):
        yield np.arange(first, min(first + _CHUNK_ROWS, stop))


@torch.no_grad()
def initialise_codebook(
    cb: ProductCodebook,
    H: np.ndarray | sp.csr_array | Callable[[np.ndarray], Tensor] | None,
    weight: float,
    gen: torch.Generator,
    device: torch.device,
    whiten: bool = True,
    n_rows: int | None = None,
    sharing: Any = None,
    blocks: Callable[[], Iterator[tuple[np.ndarray, Tensor]]] | None = None,
) -> AssignmentTable:
    """k-means of every node's input ``H`` (n, f) into ``cb``.

    Moments come from all rows, centroids from a sample of them, then every node is assigned
    in chunks of rows, so that no more than a chunk is held densely on the device. ``H`` is a
    dense or CSR matrix, or a function that computes the rows it is given (a dense float32
    device tensor): then no (n, f) matrix is ever held, at the price of computing the rows
    twice (moments, then codes).

    Parameters
    ----------
    cb : ProductCodebook
    H : ndarray, csr_array of shape (n_nodes, n_features), or callable
        The inputs, or ``rows -> Tensor of shape (len(rows), n_features)``.
    weight : float
        The EMA counts the codewords start with, as a share of their members (a batch's share
        of the nodes: the counts a training step adds).
    gen : torch.Generator
    device : torch.device
    whiten : bool, default=True
        Cluster standardised inputs; ``False``: in the inputs' own scale.
    n_rows : int, default=None
        The number of nodes when ``H`` is a function.
    sharing : skvqgnn.shards.Sharing, default=None
        A partitioned fit's: ``H`` computes this process's nodes only; the moments, the
        k-means sample, the member sums and the codes are exchanged, so that every process
        ends with the codebook and the codes one process holding the whole graph would.
    blocks : callable, default=None
        Instead of ``H`` (then ``None``): ``blocks()`` yields ``(nodes, rows)`` pairs that
        cover every node once, in an order of its own (VQ inference's batches); it is run
        twice, for the moments and the k-means sample, then for the codes.

    Returns
    -------
    AssignmentTable
        The nodes' codes (feature and gradient codes alike).
    """
    if blocks is not None:
        return _initialise_from_blocks(cb, blocks, n_rows, weight, gen, device)
    if callable(H):
        n, rows_of = n_rows, H
        moments = _streamed_moments(rows_of, n, sharing)
    else:
        n, matrix = H.shape[0], H
        moments = _column_moments(matrix)

        def rows_of(rows: np.ndarray) -> Tensor:
            return dense_rows(matrix, rows, device)

    sample = _kmeans_sample(n, cb, gen)
    mean, var = (cb.split(torch.from_numpy(v.astype(np.float32)).to(device)) for v in moments)
    if not whiten:
        var = torch.ones_like(var)
    if sharing is None:
        rows = rows_of(sample)
    else:  # each process computes its rows of the sample; the sum puts them together
        rows = torch.zeros(len(sample), cb.n_features, device=device)
        mine = (sample >= sharing.start) & (sample < sharing.stop)
        if mine.any():
            rows[torch.from_numpy(mine).to(device)] = rows_of(sample[mine])
        rows = sharing.sum(rows.cpu()).to(device)
    cb.seed(mean, var, cb.split(rows), gen, _KMEANS_ITERS)
    chunks = ((chunk, rows_of(chunk)) for chunk in _chunks(n, sharing))
    return _assign_every_node(cb, chunks, n, weight, sharing)


def _kmeans_sample(n: int, cb: ProductCodebook, gen: torch.Generator) -> np.ndarray:
    """The sorted nodes whose rows the k-means of ``cb`` is fitted on."""
    sample = torch.randperm(n, generator=gen)[: max(_KMEANS_SAMPLE, 4 * cb.n_codewords)]
    return np.sort(sample.numpy())


def _assign_every_node(
    cb: ProductCodebook,
    chunks: Iterable[tuple[np.ndarray, Tensor]],
    n: int,
    weight: float,
    sharing: Any = None,
) -> AssignmentTable:
    """Every node's codes from ``(nodes, rows)`` chunks, and the codewords settled on the
    means of their members (the counts set to ``weight`` of them)."""
    table = AssignmentTable(n, cb.n_slices, cb.n_codewords)
    count = sums = None
    for chunk, rows in chunks:
        x = cb.split(rows)
        codes = cb.assign(x)
        c, s_ = cb.member_sums(x, codes)
        count, sums = (c, s_) if count is None else (count + c, sums + s_)
        table.set_both(chunk, codes.cpu().numpy())
    if sharing is not None:
        count, sums = _summed(sharing, count, sums)
        sharing.share_codes(table, both=True)
    cb.settle(count, sums, weight)
    return table


def _initialise_from_blocks(
    cb: ProductCodebook,
    blocks: Callable[[], Iterator[tuple[np.ndarray, Tensor]]],
    n: int,
    weight: float,
    gen: torch.Generator,
    device: torch.device,
) -> AssignmentTable:
    """`initialise_codebook` over ``blocks``: one pass for the moments and the rows of the
    k-means sample, one for the codes; no (n, f) matrix is held."""
    sample = _kmeans_sample(n, cb, gen)
    slot = np.full(n, -1, dtype=np.int64)
    slot[sample] = np.arange(len(sample))
    rows = torch.zeros(len(sample), cb.n_features, device=device)
    total = square = None
    for nodes, x in blocks():
        x64 = x.double()
        s, q = x64.sum(0), (x64 * x64).sum(0)
        total, square = (s, q) if total is None else (total + s, square + q)
        picked = slot[nodes] >= 0
        rows[torch.from_numpy(slot[nodes[picked]]).to(device)] = x[torch.from_numpy(picked)]
    moments = _mean_and_variance(total.cpu().numpy(), square.cpu().numpy(), n)
    mean, var = (cb.split(torch.from_numpy(v.astype(np.float32)).to(device)) for v in moments)
    cb.seed(mean, var, cb.split(rows), gen, _KMEANS_ITERS)
    return _assign_every_node(cb, blocks(), n, weight)


def _summed(sharing: Any, count: Tensor, sums: Tensor) -> tuple[Tensor, Tensor]:
    """Member counts and sums of a codebook summed over the processes (in float64)."""
    flat = sharing.sum(torch.cat([count.reshape(-1), sums.reshape(-1)]).double().cpu())
    return (
        flat[: count.numel()].view_as(count).to(count),
        flat[count.numel() :].view_as(sums).to(sums),
    )


@torch.no_grad()
def initialise_codebooks(
    model: VQGNN,
    data: GraphData,
    sampler: NodeSampler,
    gen: torch.Generator,
    device: torch.device,
    sharing: Any = None,
) -> tuple[list[AssignmentTable], AssignmentTable | None]:
    """Codebooks from data before training: every layer input from the exact layers, k-means
    per slice, every node assigned; and the input codebook of learnable convolutions from the
    raw features. Leaves ``model`` in eval mode.

    A partitioned fit (``sharing``) cannot run exact layers, which need every node's
    representation: there codebook ``l`` clusters the VQ inference output of layer ``l``
    (out-of-batch messages through the codebooks below, initialised first), and each process
    computes its own nodes (`initialise_codebook`).

    Codebook ``l`` clusters the output of layer ``l``, which is computed chunk by chunk from
    the exact output of layer ``l - 1`` (the raw features for ``l = 0``): the host holds the
    layer below, never the clustered layer itself.

    Global attention (the graph transformer: ``every_pair`` convolutions) has an exact layer
    of n² work, so there too codebook ``l`` clusters the VQ inference output of layer ``l``,
    the input codebook initialised first, batch by batch (`vq_blocks`): no layer is held.

    Parameters
    ----------
    model : VQGNN
        The network (its mode is the caller's, except where said).
    data : GraphData
        The graph's convolutions.
    sampler : NodeSampler
        Its batch size sets the EMA counts the codewords start with.
    gen : torch.Generator
        For the k-means samples and seeds.
    device : torch.device
    sharing : skvqgnn.shards.Sharing, default=None
        A partitioned fit's.

    Returns
    -------
    tables : list of AssignmentTable
        Per VQ layer, the codes of every node.
    input_table : AssignmentTable or None
        The input codes (``None`` without an input codebook).
    """
    model.eval()
    tables: list[AssignmentTable] = []
    weight = sampler.batch_size / data.n_nodes
    input_table = None
    if sharing is None and any(conv.every_pair for conv in data.convolutions):
        # exact global attention scores every pair of nodes, n² work (hours at 10⁶ nodes):
        # each level clusters the VQ inference output of its layer instead, the layers below
        # through their codewords (the input codebook first), linear in n
        if model.input_codebook is not None:
            input_table = _initialise_input(model, data, gen, device)
        for level, cb in enumerate(model.codebooks):

            def blocks(level=level) -> Iterator[tuple[np.ndarray, Tensor]]:
                return vq_blocks(model, data, tables, input_table, sampler, device, level)

            tables.append(
                initialise_codebook(
                    cb, None, weight, gen, device, n_rows=data.n_nodes, blocks=blocks
                )
            )
        return tables, input_table
    for level, cb in enumerate(model.codebooks):
        if sharing is None:
            source, initial = _exact_pass(model, data, device, level)

            def rows_of(rows: np.ndarray, level=level, source=source, initial=initial) -> Tensor:
                return _exact_rows(model, data, level, source, initial, rows, device)

        else:  # the layers below through their codewords: this process holds its nodes only

            def rows_of(rows: np.ndarray, level=level) -> Tensor:
                out = vq_inference(model, data, tables, None, sampler, rows, device, level)
                return out.to(device)

        tables.append(
            initialise_codebook(
                cb, rows_of, weight, gen, device, n_rows=data.n_nodes, sharing=sharing
            )
        )
        if sharing is None:
            del source, initial
    if model.input_codebook is not None:
        input_table = _initialise_input(model, data, gen, device)
    return tables, input_table


def _initialise_input(
    model: VQGNN, data: GraphData, gen: torch.Generator, device: torch.device
) -> AssignmentTable:
    """The input codebook of learnable convolutions from the raw features, and their codes."""
    # raw features are clustered in their own scale: the first layer projects them linearly,
    # so the plain distance bounds the error of a projected codeword, while per-dimension
    # whitening would let rare features (rare words) decide the clusters
    return initialise_codebook(model.input_codebook, data.graph.X, 1.0, gen, device, whiten=False)


def _exact_rows(
    model: VQGNN,
    data: GraphData,
    layer: int,
    source: np.ndarray | sp.csr_array,
    initial: np.ndarray | None,
    rows: np.ndarray,
    device: torch.device,
) -> Tensor:
    """The exact output of ``layer`` for ``rows``, from its input ``source`` (every node) and
    the first layer's output ``initial`` (for initial residuals; else ``None``)."""
    messages = [
        conv.exact_messages(layer, source, initial, rows, model.attention(layer, s), model, device)
        for s, conv in enumerate(data.convolutions)
    ]
    return model.layer_output(layer, messages)


def _exact_pass(
    model: VQGNN, data: GraphData, device: torch.device, upto: int
) -> tuple[np.ndarray | sp.csr_array, np.ndarray | None]:
    """The input of layer ``upto`` for every node (the raw features for 0) and the first
    layer's output when a convolution uses it, by layer-wise full-neighbour passes."""
    n = data.n_nodes
    keep_initial = any(conv.uses_initial for conv in data.convolutions)
    H, initial = data.graph.X, None
    for i in range(upto):
        if i == 1 and keep_initial:
            initial = H  # the first layer's output, for initial residuals
        out = None
        for start in range(0, n, _CHUNK_ROWS):
            rows = np.arange(start, min(start + _CHUNK_ROWS, n))
            z = _exact_rows(model, data, i, H, initial, rows, device)
            if out is None:
                out = np.empty((n, z.shape[1]), dtype=np.float32)
            out[rows] = z.cpu().numpy()
        H = out
    if upto == 1 and keep_initial:
        initial = H
    return H, initial


@torch.no_grad()
def exact_layers(
    model: VQGNN, data: GraphData, device: torch.device, upto: int | None = None
) -> np.ndarray:
    """Layer-wise full-neighbour forward over node chunks.

    Parameters
    ----------
    model : VQGNN
    data : GraphData
    device : torch.device
    upto : int, default=None
        Return the input of layer ``upto`` (the output of layer ``upto - 1``); ``None``: the
        network's output.

    Returns
    -------
    ndarray of shape (n_nodes, width), float32
    """
    return _exact_pass(model, data, device, len(model.layers) if upto is None else upto)[0]


def inference_groups(
    data: GraphData,
    sampler: NodeSampler,
    keep: Callable[[np.ndarray], bool] | None = None,
    rows: int = _CHUNK_ROWS,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """The sampler's inference batches, several at a time where the network allows.

    A network of fixed convolutions runs batches of about ``rows`` nodes together (sorted
    nodes and the batch of each, ``make_batch``'s ``segment``): the outputs are those of the
    batches one by one, with a step's fixed costs paid once per group. Networks with
    attention get one batch at a time (``segment`` ``None``).

    Parameters
    ----------
    data : GraphData
    sampler : NodeSampler
    keep : callable, default=None
        ``keep(batch)``: whether a batch is run; every one when ``None``.
    rows : int
        A group is closed once it holds this many nodes (the last one may hold fewer).

    Yields
    ------
    nodes : ndarray
    segment : ndarray or None
    """
    batches = (b for b in sampler.inference_batches() if keep is None or keep(b))
    if any(conv.learnable for conv in data.convolutions):
        for nodes in batches:
            yield nodes, None
        return
    group: list[np.ndarray] = []
    size = 0
    for nodes in batches:
        group.append(nodes)
        size += len(nodes)
        if size >= rows:
            yield _merged(group)
            group, size = [], 0
    if group:
        yield _merged(group)


def _merged(group: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Batches as one: their nodes sorted, and the batch of each (``None`` for one batch)."""
    if len(group) == 1:
        return group[0], None
    nodes = np.concatenate(group)
    segment = np.repeat(np.arange(len(group)), [len(g) for g in group])
    order = np.argsort(nodes, kind="stable")
    return nodes[order], segment[order]


def level_inputs(
    model: VQGNN,
    data: GraphData,
    tables: Sequence[AssignmentTable],
    input_table: AssignmentTable | None,
    sampler: NodeSampler,
    device: torch.device,
    level: int,
) -> Iterator[tuple[np.ndarray, Tensor]]:
    """Per inference batch, its nodes and the split inputs (b, P, D) of codebook ``level``
    from the network's own VQ forward over the levels below, whose tables must be complete
    (``tables[:level]``).

    Parameters
    ----------
    model : VQGNN
        The network (its mode is the caller's, except where said).
    data : GraphData
        The graph's convolutions.
    tables : list of AssignmentTable
        Per VQ layer, the codes of every node.
    input_table : AssignmentTable or None
        The input codes of the raw features (learnable convolutions' first layer).
    sampler : NodeSampler
        Its ``inference_batches`` are the batches run.
    device : torch.device
    level : int
        The codebook whose inputs are computed.

    Yields
    ------
    nodes : ndarray
    inputs : Tensor of shape (b, P, D)
        Per group of batches (`inference_groups`).
    """
    cb = model.codebooks[level]
    for nodes, rows in vq_blocks(model, data, tables, input_table, sampler, device, level):
        yield nodes, cb.split(rows)


@torch.no_grad()
def refresh_codebooks(
    model: VQGNN,
    data: GraphData,
    tables: Sequence[AssignmentTable],
    input_table: AssignmentTable | None,
    sampler: NodeSampler,
    device: torch.device,
    sharing: Any = None,
) -> None:
    """Feature codes and codewords for inference, level by level over the inference batches in
    eval mode: every node re-assigned by its own dropout-free input, then every feature codeword
    moved to the mean of its members.

    Training assigns nodes by their inputs under dropout and averages those, which is right
    for training steps but biased for predictions. Gradient codebooks are left as they are.

    Parameters
    ----------
    model : VQGNN
        The network (its mode is the caller's, except where said).
    data : GraphData
        The graph's convolutions.
    tables : list of AssignmentTable
        Per VQ layer, the codes of every node; the feature codes are updated in place.
    input_table : AssignmentTable or None
        The input codes of the raw features (learnable convolutions' first layer).
    sampler : NodeSampler
        Its ``inference_batches`` are the batches run.
    device : torch.device
    sharing : skvqgnn.shards.Sharing, default=None
        A partitioned fit's: each process re-assigns its own nodes (the sampler's), the
        member sums and the codes are exchanged before the next level.
    """
    was_training = model.training
    model.eval()
    for level, (cb, table) in enumerate(zip(model.codebooks, tables, strict=True)):
        count = sums = None
        inputs = level_inputs(model, data, tables, input_table, sampler, device, level)
        for batch_nodes, x in inputs:
            codes = cb.assign(x)
            c, s_ = cb.member_sums(x, codes)
            count, sums = (c, s_) if count is None else (count + c, sums + s_)
            table.set(batch_nodes, codes.cpu().numpy())
        if sharing is not None:
            count, sums = _summed(sharing, count, sums)
            sharing.share_codes(table, both=False)
        cb.recentre(count, sums)
    model.train(was_training)


@torch.no_grad()
def vq_inference(
    model: VQGNN,
    data: GraphData,
    tables: Sequence[AssignmentTable],
    input_table: AssignmentTable | None,
    sampler: NodeSampler,
    nodes: np.ndarray,
    device: torch.device,
    upto: int | None = None,
    reduce: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Logits (len(nodes), out) by mini-batch VQ inference in the network's current mode,
    returned on the CPU; ``upto=l``: the output of layer ``l`` instead (``VQGNN.forward``).
    Only the sampler's inference batches that hold one of ``nodes`` are run.

    Parameters
    ----------
    model : VQGNN
        The network (its mode is the caller's, except where said).
    data : GraphData
        The graph's convolutions.
    tables : list of AssignmentTable
        Per VQ layer, the codes of every node.
    input_table : AssignmentTable or None
        The input codes of the raw features (learnable convolutions' first layer).
    sampler : NodeSampler
        Its ``inference_batches`` are the batches run.
    nodes : ndarray
        The nodes whose outputs are returned.
    device : torch.device
    upto : int, default=None
        Stop after this layer.
    reduce : callable, default=None
        Applied to each group's output rows before they are kept: the result holds what it
        returns (``predict``: the class index, one small integer per node, so that the
        logits of every node are never held at once).

    Returns
    -------
    Tensor of shape (len(nodes), width), or (len(nodes), ...) of what ``reduce`` returns
    """
    wanted = np.zeros(data.n_nodes, dtype=bool)
    wanted[nodes] = True
    out: Tensor | None = None
    where = np.full(data.n_nodes, -1, dtype=np.int32 if len(nodes) < 2**31 else np.int64)
    where[nodes] = np.arange(len(nodes))
    for kept, rows in vq_blocks(model, data, tables, input_table, sampler, device, upto, wanted):
        rows = rows.cpu()
        if reduce is not None:
            rows = reduce(rows)
        if out is None:
            out = torch.empty((len(nodes), *rows.shape[1:]), dtype=rows.dtype)
        out[torch.from_numpy(where[kept].astype(np.int64))] = rows
    return out


@torch.no_grad()
def vq_blocks(
    model: VQGNN,
    data: GraphData,
    tables: Sequence[AssignmentTable],
    input_table: AssignmentTable | None,
    sampler: NodeSampler,
    device: torch.device,
    upto: int | None = None,
    wanted: np.ndarray | None = None,
) -> Iterator[tuple[np.ndarray, Tensor]]:
    """`vq_inference` group by group: ``(nodes, rows)``, the nodes of a group of inference
    batches (those ``wanted``, a mask over the nodes; every node when ``None``) and their
    output rows on ``device``, in the sampler's order.

    Parameters
    ----------
    model, data, tables, input_table, sampler, device, upto
        As for `vq_inference`.
    wanted : ndarray of shape (n_nodes,), bool, default=None
        The nodes whose rows are yielded; only the groups holding one are run.

    Yields
    ------
    nodes : ndarray
    rows : Tensor of shape (len(nodes), width)
    """
    position = np.full(data.n_nodes, -1, dtype=np.int32)
    levels = tables if upto is None else tables[:upto]
    keep = None if wanted is None else (lambda b: wanted[b].any())
    for batch_nodes, segment in inference_groups(data, sampler, keep):
        batch = make_batch(
            data,
            batch_nodes,
            levels,
            device,
            input_table=input_table,
            position=position,
            segment=segment,
        )
        logits, _ = model(batch, upto=upto)
        if wanted is None:
            yield batch_nodes, logits
        else:
            mask = wanted[batch_nodes]
            yield batch_nodes[mask], logits[torch.from_numpy(mask).to(logits.device)]


@torch.no_grad()
def assign_new_graph(
    model: VQGNN, data: GraphData, sampler: NodeSampler, device: torch.device
) -> tuple[list[AssignmentTable], AssignmentTable | None]:
    """The codes of every node of an unseen graph, its nearest feature codewords.

    Level by level in the sampler's inference batches: the raw features to the input codebook
    first, then level ``l``'s inputs from the network's own VQ forward over the levels below,
    whose codes are complete by then. Memory is that of inference, one batch at a time;
    codebooks are left unchanged.

    Parameters
    ----------
    model : VQGNN
        The network (its mode is the caller's, except where said).
    data : GraphData
        The graph's convolutions.
    sampler : NodeSampler
        Its ``inference_batches`` are the batches run.
    device : torch.device

    Returns
    -------
    tables : list of AssignmentTable
    input_table : AssignmentTable or None
    """
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
        inputs = level_inputs(model, data, tables, input_table, sampler, device, level)
        for batch_nodes, x in inputs:
            table.set_both(batch_nodes, cb.assign(x).cpu().numpy())
        tables.append(table)
    return tables, input_table
