"""``VQGNNLinkPredictor``: link prediction from VQ-GNN node embeddings.

Training pairs are stored as *incidences*: a pair ``(u, v)`` with target ``t`` is seen once from
``u`` (anchor ``u``, partner ``v``) and once from ``v``. A training step adds to the sampler's
node batch ``partner_nodes`` positive partners of batch nodes from outside it (none by default) and
``negative_nodes`` nodes drawn uniformly from the whole graph, and scores the
incidences whose two endpoints are both in that extended batch, plus ``n_negatives`` sampled
negatives ``(anchor, w)`` per positive incidence with ``w`` among the drawn nodes, so that the
negatives are uniform over the graph like an edge split's test negatives; the loss of an incidence
reaches the anchor's embedding only (the partner's is read without gradient). Each endpoint of a
pair inside the batch therefore receives the pair's gradient once, and with symmetric decoders
the embedding gradients equal those of full-graph training on ``Σ_pairs ℓ(z_u, z_v)``. The
network's messages are the VQ-GNN ones (exact inside the batch, codewords from outside, gradient
codewords backwards); only the pair loss is restricted to the batch.

Why not also pairs with one endpoint outside the batch, reading that endpoint's embedding from a
codebook of the output: we built it, and it destabilised training (Cora, 10 epochs, dot
decoder, learning rate 0.01: test ROC AUC 0.37-0.64 against 0.80 with pairs inside the batch).
Positives inside the batch always met an exact partner and negatives nearly always a codeword,
whose staleness after each step the model chased. With the cluster sampler, the METIS parts
are regrouped every epoch, so pairs that cross parts are trained in the epochs where their parts
share a batch.

Why the partner nodes (``partner_nodes``, off by default): with the cluster sampler a batch
holds a few METIS parts, and on a graph with hubs many edges cross parts (on twitch-en half of
the training edges had their endpoints in different batches of an epoch, against 7-17 % on cora
and citeseer). Without the partners those pairs are trained only in the epochs where their parts
meet. The partners are drawn by incidence (a node adjacent to several batch nodes brings several
pairs) and are ordinary batch rows that anchor pairs like the others; whether they help
depends on the graph and the backbone (``doc/link_prediction.md`` has the measurements).

Why the drawn nodes: negatives taken from the batch itself are, with the cluster sampler, nodes
of the same few METIS parts, while test negatives are uniform pairs, mostly far apart, which the
model then never saw. The drawn nodes are ordinary batch rows (exact messages among the batch,
codewords from outside), so their embeddings are as good as the batch's; they cost up to twice
the rows per step.
"""

from __future__ import annotations

import warnings
from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import expit
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.exceptions import DataConversionWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import Tensor, nn
from torch.nn import functional as F

from ._base import BaseVQGNN, _check_not_empty, resolve_graph, view_arguments
from .distributed import resolve_strategy
from .graph import (
    Graph,
    NodeSet,
    PairSet,
    candidate_edges,
    check_pairs,
    contains_sorted,
    csr_digest,
    pair_keys,
    without_pairs,
)
from .layers import Backbone
from .metrics import roc_auc
from .sketch import gather_rows
from .training import Task

__all__ = ["VQGNNLinkPredictor", "LinkHead"]

_NEGATIVE_ROUNDS = 10  # rejection rounds per sampled negative before it is skipped
_SCORE_CHUNK = 1 << 16  # pairs decoded at once at predict time


class LinkHead(nn.Module):
    """Pair decoder.

    Parameters
    ----------
    decoder : {"dot", "hadamard"}
        ``"dot"``: ``⟨z_u, z_v⟩``; ``"hadamard"``: an MLP (``dim → dim → 1``, ReLU, dropout) on
        ``z_u ⊙ z_v``. Both are symmetric in ``u`` and ``v``.
    dim : int
        Embedding width.
    dropout : float
        Dropout inside the Hadamard MLP.
    """

    def __init__(self, decoder: str, dim: int, dropout: float):
        super().__init__()
        self.decoder = decoder
        self.mlp = None
        if decoder == "hadamard":
            self.mlp = nn.Sequential(
                nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, 1)
            )
            # z_u ⊙ z_v starts near zero, so the hidden units' pre-activations start at their
            # biases: a negative default bias would leave a unit dead for every pair
            nn.init.zeros_(self.mlp[0].bias)

    def forward(self, z_u: Tensor, z_v: Tensor) -> Tensor:
        """Scores (logits) of the pairs, shape (m,)."""
        if self.mlp is None:
            return (z_u * z_v).sum(-1)
        return self.mlp(z_u * z_v).squeeze(-1)


def _check_targets(t: Any, m: int) -> np.ndarray:
    t = np.asarray(t.toarray() if sp.issparse(t) else t)
    if t.ndim == 2 and t.shape[1] == 1:
        warnings.warn(
            "A column-vector t was passed when a 1d array was expected. Please change the "
            "shape of t to (n_pairs, ), for example using ravel().",
            DataConversionWarning,
            stacklevel=3,
        )
        t = t.ravel()
    if t.ndim != 1:
        raise ValueError(f"t must be 1-D (one 0/1 target per pair), got shape {t.shape}")
    if len(t) != m:
        raise ValueError(f"t has {len(t)} entries but {m} pairs were given")
    if t.dtype == object or not (np.issubdtype(t.dtype, np.number) or t.dtype == bool):
        raise ValueError(f"t must hold 0/1 targets, got dtype {t.dtype}")
    if not np.all(np.isin(t, (0, 1))):
        raise ValueError(f"t must hold 0/1 targets (1 = link), got values {np.unique(t)[:5]}")
    return t.astype(np.int64)


def _adjacency_of(graph: Graph, positives: np.ndarray) -> sp.csr_array:
    """Message-passing graph over the positive pairs: weight ``A[u, v]`` where ``(u, v)`` is an
    edge of the graph, else 1; both directions when the graph is undirected."""
    n = graph.n_nodes
    pairs = positives[positives[:, 0] != positives[:, 1]]
    if graph.is_symmetric:
        pairs = np.concatenate([pairs, pairs[:, ::-1]])
    keys = np.unique(pair_keys(pairs, n))
    rows, cols = keys // n, keys % n
    weights = np.asarray(graph.A[rows, cols], dtype=np.float32).ravel()
    weights[weights == 0] = 1.0
    A = sp.csr_array((weights, (rows, cols)), shape=(n, n), dtype=np.float32)
    A.sort_indices()
    return A


class _Incidences:
    """Training pairs seen from each endpoint: row ``a`` lists (partner, target) of a's pairs."""

    def __init__(self, pairs: np.ndarray, targets: np.ndarray, n: int):
        anchors = np.concatenate([pairs[:, 0], pairs[:, 1]])
        partners = np.concatenate([pairs[:, 1], pairs[:, 0]])
        values = np.concatenate([targets, targets]).astype(np.float32)
        order = np.argsort(anchors, kind="stable")
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(anchors, minlength=n), out=indptr[1:])
        self.csr = sp.csr_array((values[order], partners[order], indptr), shape=(n, n))
        self.n_positive = int(2 * targets.sum())
        self.total = 2 * len(pairs)

    def of(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(local anchor row, partner node, target) of the incidences anchored at ``nodes``."""
        return gather_rows(self.csr, nodes)


class _NegativeSampler:
    """Partners ``w != anchor`` drawn uniformly from candidate nodes; with ``known`` keys also
    ``(anchor, w)`` and ``(w, anchor)`` never a known positive pair."""

    def __init__(self, n: int, known: np.ndarray | None):
        self.n = n
        self.known = None if known is None else np.unique(known)

    def _rejected(self, anchors: np.ndarray, w: np.ndarray) -> np.ndarray:
        bad = w == anchors
        if self.known is not None:
            for keys in (anchors * self.n + w, w * self.n + anchors):
                bad |= contains_sorted(self.known, keys)
        return bad

    def sample(
        self, anchors: np.ndarray, rng: np.random.Generator, candidates: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(anchor index, partner) of one negative per anchor, partners among ``candidates``
        (default: every node); an anchor without a valid draw in 10 rounds is skipped."""

        def draw(size: int) -> np.ndarray:
            if candidates is None:
                return rng.integers(self.n, size=size)
            return candidates[rng.integers(len(candidates), size=size)]

        w = draw(len(anchors))
        todo = np.flatnonzero(self._rejected(anchors, w))
        for _ in range(_NEGATIVE_ROUNDS):
            if len(todo) == 0:
                break
            w[todo] = draw(len(todo))
            todo = todo[self._rejected(anchors[todo], w[todo])]
        keep = np.ones(len(anchors), dtype=bool)
        keep[todo] = False
        return np.flatnonzero(keep), w[keep]


class LinkPrediction(Task):
    """The link predictor's task: binary cross-entropy of the decoder's scores of the
    positive pairs, the given negatives and ``n_negatives`` sampled negatives per positive
    incidence, among the nodes of a step; ROC-AUC of the held-out pairs for validation.

    A pair enters a step's loss when both its nodes are in the step; the anchor's embedding
    carries the gradient, the partner's enters detached. `extend_batch` brings partners and
    negative nodes from outside the batch into the step.

    Parameters
    ----------
    pairs, targets : ndarray of shape (m, 2) and (m,)
        Training pairs and their 0/1 targets.
    n_nodes : int
    negatives : _NegativeSampler
        Draws the sampled negatives (excluding the known pairs, or not).
    rng : numpy.random.Generator
        For the partners and negatives drawn each step.
    n_outputs : int
        The embedding width.
    n_negatives : int
    partner_nodes, negative_nodes : int or "batch_size"
        How many outside partners and uniform negative nodes a step adds.
    val_pairs : (ndarray (v, 2), ndarray (v,)) or None
        Held-out pairs and their targets.
    """

    def __init__(
        self,
        pairs: np.ndarray,
        targets: np.ndarray,
        n_nodes: int,
        negatives: _NegativeSampler,
        rng: np.random.Generator,
        n_outputs: int,
        n_negatives: int,
        partner_nodes: int | str,
        negative_nodes: int | str,
        val_pairs: tuple[np.ndarray, np.ndarray] | None = None,
    ):
        self.incidences = _Incidences(pairs, targets, n_nodes)
        self.negatives, self.rng = negatives, rng
        self.n_negatives = n_negatives
        self.partner_nodes, self.negative_nodes = partner_nodes, negative_nodes
        self.val_pairs = val_pairs
        self.pool: np.ndarray | None = None  # the negative nodes of the current step
        self.position = np.full(n_nodes, -1, dtype=np.int32)  # -1 outside the current step
        anchors = np.bincount(np.concatenate([pairs[:, 0], pairs[:, 1]]), minlength=n_nodes)
        self.loss_mask = anchors > 0
        self.n_outputs = n_outputs
        self.n_targets = self.incidences.total + n_negatives * self.incidences.n_positive

    def extend_batch(self, nodes: np.ndarray) -> np.ndarray:
        """Add ``partner_nodes`` positive partners from outside the batch, then
        ``negative_nodes`` uniformly drawn nodes as negative partners, to the batch."""
        extra = [nodes]
        size = len(nodes) if self.partner_nodes == "batch_size" else int(self.partner_nodes)
        if size:
            _, partners, targets = self.incidences.of(nodes)
            position = self.position  # -1 outside the batch; reset below (O(batch) a step)
            position[nodes] = 0
            try:
                partners = partners[(targets == 1) & (position[partners] < 0)]
            finally:
                position[nodes] = -1
            if len(partners):
                # by incidence: a partner of several batch nodes brings several pairs
                drawn = partners[self.rng.integers(len(partners), size=size)]
                extra.append(np.unique(drawn))
        size = len(nodes) if self.negative_nodes == "batch_size" else int(self.negative_nodes)
        self.pool = None
        if size:
            self.pool = self.rng.integers(len(self.position), size=size)
            extra.append(self.pool)
        if len(extra) == 1:
            return nodes
        added = np.unique(np.concatenate(extra[1:]))
        return np.concatenate([nodes, added[~np.isin(added, nodes)]])

    def loss(self, logits: Tensor, nodes: Tensor) -> tuple[Tensor, int]:  # noqa: D102
        batch = nodes.cpu().numpy()
        pool = batch if self.pool is None else self.pool
        local, partners, targets = self.incidences.of(batch)
        position = self.position
        position[batch] = np.arange(len(batch))
        try:
            where = position[partners]
            inside = where >= 0
            local, where, targets = local[inside], where[inside], targets[inside]
            positive = np.flatnonzero(targets == 1)
            pieces = [(local, where, targets)]
            for _ in range(self.n_negatives):
                which, w = self.negatives.sample(batch[local[positive]], self.rng, pool)
                anchors = local[positive[which]]
                pieces.append((anchors, position[w], np.zeros(len(w), np.float32)))
        finally:
            position[batch] = -1
        local, where, targets = (np.concatenate(part) for part in zip(*pieces, strict=True))
        count = len(local)
        if count == 0:
            return logits.sum() * 0.0, 0
        device = logits.device
        # index_select: its backward is deterministic on a multithreaded CPU (logits[idx]'s is not)
        z_anchor = logits.index_select(0, torch.from_numpy(local).to(device))
        z_partner = logits.detach()[torch.from_numpy(where).to(device)]
        scores = self.head(z_anchor, z_partner)
        t = torch.from_numpy(np.asarray(targets, dtype=np.float32)).to(device)
        return F.binary_cross_entropy_with_logits(scores, t, reduction="sum"), count

    def val_score(self, logits: Tensor, nodes: np.ndarray) -> float:  # noqa: D102
        pairs, targets = self.val_pairs
        head = self.head
        with torch.no_grad():
            z_u = logits[torch.from_numpy(np.searchsorted(nodes, pairs[:, 0]))]
            z_v = logits[torch.from_numpy(np.searchsorted(nodes, pairs[:, 1]))]
            device = next((p.device for p in head.parameters()), z_u.device)
            scores = head(z_u.to(device), z_v.to(device)).cpu().numpy()
        return roc_auc(targets, scores)


class VQGNNLinkPredictor(ClassifierMixin, BaseVQGNN):
    """Link predictor: VQ-GNN node embeddings and a pair decoder, trained in mini-batches.

    The network (any backbone of ``VQGNNClassifier``, with the same vector-quantised message
    passing) maps every node to an embedding of width ``embedding_dim``; a decoder scores a pair
    ``(u, v)`` from ``z_u`` and ``z_v``. ``fit(A, X)`` takes the edges of ``A`` as positives and
    samples negatives; ``fit(G.pairs(P), t)`` takes pairs with 0/1 targets and passes messages
    over the positive pairs only, so cross-validation over pairs never leaks a held-out link into
    message passing.

    A training step computes the embeddings of a node batch, extended by ``partner_nodes``
    positive partners of its nodes and ``negative_nodes`` uniformly drawn nodes, with VQ-GNN
    message passing and scores the training pairs inside it,
    with ``n_negatives`` negatives per positive whose partners are the drawn nodes; each endpoint
    receives a pair's gradient once (see the module docstring for why
    pairs leaving the batch are not scored). With the cluster sampler the METIS parts are
    regrouped every epoch, so pairs across parts are trained when their parts meet. The memory of
    a step does not grow with the graph.

    Parameters
    ----------
    backbone : {"gcn", "sage", "gin", "gat", "transformer", "gcnii"} or Backbone, default="gcn"
        Graph convolution, as in ``VQGNNClassifier``.
    hidden_layer_sizes : int or sequence of int, default=(64,)
        Widths of the hidden layers.
    embedding_dim : int, default=64
        Width of the node embeddings (the network's output).
    decoder : {"dot", "hadamard"}, default="hadamard"
        Pair score: an MLP on ``z_u ⊙ z_v`` (``embedding_dim → embedding_dim → 1``, ReLU,
        ``dropout``), as in the OGB link baselines, or ``⟨z_u, z_v⟩``. The MLP learns which
        coordinates matter and scored better in our benchmarks (``doc/link_prediction.md``).
    n_negatives : int, default=1
        Negatives sampled per positive incidence (per endpoint of a positive pair inside a
        batch), partners drawn among the ``negative_nodes`` (the whole graph in full-graph mode).
        ``0`` is allowed when the targets given to ``fit`` contain negatives.
    negative_nodes : int or "batch_size", default="batch_size"
        Nodes drawn uniformly (with replacement) from the whole graph at every mini-batch step
        and added to the batch as extra rows; the negative partners are drawn among them, so
        negatives are uniform over the graph. ``"batch_size"`` draws as many as the batch has
        nodes; ``0`` takes the partners from the batch itself (with the cluster sampler: nodes of
        the same few METIS parts, unlike the uniform pairs a test usually holds). Not used in
        full-graph mode. ``doc/link_prediction.md`` compares the settings.
    partner_nodes : int or "batch_size", default=0
        Positive partners of batch nodes from outside the batch added as extra rows at every
        mini-batch step, so that positive pairs crossing the batch's border are trained: that
        many draws (with replacement) among the positive incidences that leave the batch, whose
        outside endpoints join it (a node adjacent to several batch nodes is likelier).
        ``"batch_size"`` draws as many as the batch has nodes; ``0`` trains only the pairs
        inside the batch. Not used in full-graph mode. Worth a try when
        ``crossing_fraction_`` is large (graphs with hubs); choose it on validation pairs
        (``doc/link_prediction.md`` has measurements with and without).
    negative_sampling : {"exclude", "uniform"}, default="exclude"
        ``"uniform"``: partners drawn uniformly among the ``negative_nodes`` (among the batch
        itself when that is 0, the whole graph in full-graph mode), never the anchor itself.
        ``"exclude"``: also never a known positive pair of the training data (in either
        direction); after 10 rejected draws a negative is skipped.
    accumulate_batches : int or "epoch", default=1
        Mini-batches whose gradients are averaged into one optimiser step, as in
        ``VQGNNClassifier``; ``"epoch"`` takes one step per epoch, as full-graph training does,
        which brings mini-batch training closer to it on some graphs and backbones and not on
        others (``doc/link_prediction.md``): choose it, with ``partner_nodes``, on validation
        pairs.
    backward_messages : {"auto", "codewords", "none"}, default="codewords"
        As in ``VQGNNClassifier``, but on for every backbone by default: the link benchmarks
        (``doc/link_prediction.md``) chose this setting.
    heads, n_codewords, codeword_dim, batch_size, sampler, parts_per_batch, partitioner, \
inference, grad_scale, ema_decay, dropout, attention_dropout, max_epochs, warm_start, \
device, sparse_backend, random_state, verbose
        As in ``VQGNNClassifier``.
    learning_rate : float, default=0.002
        Adam learning rate. Mini-batch training takes ``n / batch_size`` steps per epoch (with
        the default ``accumulate_batches=1``).
    weight_decay : float, default=0.0
        Adam's L2 penalty. A pair score is a product of two embeddings, so the penalty pulls
        toward the all-zero solution, whose gradient vanishes: a decay as large as the
        classifier's (5e-4) can collapse the decoder to a constant score.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the positive pairs (removed from message passing as
        well) and as many sampled non-edges, stop after ``n_iter_no_change`` epochs without
        improvement of their ROC AUC and keep the best epoch's model.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=20

    Attributes
    ----------
    classes_ : ndarray, ``[0, 1]``
    n_features_in_ : int
    history_ : list of dict
        Per epoch: ``loss``, ``time``, ``val_score`` (ROC AUC, with early stopping) and the VQ
        statistics of ``VQGNNClassifier.history_``.
    vq_error_ : ndarray of shape (n_vq_layers,)
    partition_ : ndarray of shape (n_nodes,), int32, or None
        The part of every node of the training graph (``sampler="cluster"``), so that
        predictions on the same graph, even a fresh copy of it, batch it as training did
        without partitioning again; ``None`` otherwise.
    n_iter_ : int
    model_ : torch.nn.Module
        The network with its codebooks (on the CPU).
    head_ : LinkHead
        The pair decoder.
    crossing_fraction_ : float
        Share of the positive training pairs whose endpoints fell in different batches of one
        epoch of the sampler (0 in full-graph mode).
    message_passing_adjacency_ : csr_array or None
        After ``fit(pairs, t)`` (or with early stopping), the graph messages were passed over:
        the positive training pairs (both directions when the graph is undirected). Pairs of the
        same graph (by content) are scored over it; ``None`` after ``fit(A, X)``.

    Examples
    --------
    >>> from skvqgnn import VQGNNLinkPredictor
    >>> from skvqgnn.datasets import load_cora
    >>> from skvqgnn.model_selection import edge_split
    >>> A, X, _, _ = load_cora()
    >>> train, val, test = edge_split(A, val=0.05, test=0.1, random_state=0)
    >>> lp = VQGNNLinkPredictor(max_epochs=3, random_state=0).fit(train.adjacency, X)
    >>> lp.predict_proba(train.adjacency, X, test.pairs).shape
    (1056, 2)
    """

    _parameter_constraints: dict = {
        **BaseVQGNN._parameter_constraints,
        "embedding_dim": [Interval(Integral, 1, None, closed="left")],
        "decoder": [StrOptions({"dot", "hadamard"})],
        "n_negatives": [Interval(Integral, 0, None, closed="left")],
        "negative_sampling": [StrOptions({"exclude", "uniform"})],
        "negative_nodes": [Interval(Integral, 0, None, closed="left"), StrOptions({"batch_size"})],
        "partner_nodes": [Interval(Integral, 0, None, closed="left"), StrOptions({"batch_size"})],
    }

    def __init__(
        self,
        backbone: str | Backbone = "gcn",
        *,
        hidden_layer_sizes: Any = (64,),
        embedding_dim: int = 64,
        decoder: str = "hadamard",
        n_negatives: int = 1,
        negative_sampling: str = "exclude",
        negative_nodes: int | str = "batch_size",
        partner_nodes: int | str = 0,
        heads: int | None = None,
        n_codewords: int = 256,
        codeword_dim: int | str = "auto",
        batch_size: int | None = 512,
        sampler: str = "cluster",
        parts_per_batch: int = 4,
        partitioner: str = "metis",
        inference: str = "vq",
        backward_messages: str = "codewords",
        grad_scale: float = 1.0,
        ema_decay: float = 0.99,
        dropout: float = 0.5,
        attention_dropout: float = 0.0,
        learning_rate: float = 0.002,
        weight_decay: float = 0.0,
        accumulate_batches: int | str = 1,
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
        self.embedding_dim = embedding_dim
        self.decoder = decoder
        self.n_negatives = n_negatives
        self.negative_sampling = negative_sampling
        self.negative_nodes = negative_nodes
        self.partner_nodes = partner_nodes

    # -- training hooks --------------------------------------------------------------------------
    def _make_head(self) -> LinkHead:
        return LinkHead(self.decoder, self.embedding_dim, self.dropout)

    def _check_same_head(self, head: LinkHead) -> None:
        """``warm_start`` continues the fitted decoder only if ``decoder`` is unchanged (the
        embedding width is checked with the network); its dropout takes the current value."""
        if head.decoder != self.decoder:
            raise ValueError(
                f"warm_start=True continues the fitted network, but decoder changed from "
                f"{head.decoder!r} to {self.decoder!r}. Set warm_start=False to fit a new network"
            )
        for module in head.modules():
            if isinstance(module, nn.Dropout):
                module.p = self.dropout

    def _crossing_fraction(self, graph: Graph, positives: np.ndarray, seed: int) -> float:
        """Share of the positive pairs whose endpoints fall in different batches of an epoch
        (0 in full-graph mode)."""
        n = graph.n_nodes
        if len(positives) == 0 or self._effective_batch_size(n) >= n:
            return 0.0
        which = np.empty(n, dtype=np.int64)
        sampler = self._sampler_for(graph, seed)
        for i, batch in enumerate(sampler.epoch(np.random.default_rng(seed))):
            which[batch] = i
        return float(np.mean(which[positives[:, 0]] != which[positives[:, 1]]))

    # -- fit -------------------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(
        self,
        A: Any,
        X: Any = None,
        t: Any = None,
        callbacks: Any = None,
        distributed: Any = None,
    ) -> VQGNNLinkPredictor:
        """Fit on the edges of a graph, ``fit(A, X)``, or on labelled pairs, ``fit(pairs, t)``.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, or PairSet
            Adjacency whose edges (self-loops excepted; each undirected edge once) are the
            positives and the message-passing graph; or a ``PairSet`` (then the second argument
            is ``t``) whose positive pairs are both the positives and the message-passing graph.
        X : array-like or sparse matrix of shape (n_nodes, n_features)
            Node features (when ``A`` is an adjacency).
        t : array-like of shape (n_pairs,)
            0/1 targets of the pairs of a ``PairSet``; the 0-pairs are used as given negatives
            (in addition to ``n_negatives`` sampled ones per positive incidence).
        callbacks : list of skvqgnn.Callback, default=None
            Hooks into the training loop (after each step and epoch, at the start and end of
            the fit): to record or plot a measure over the epochs, or to stop a fit early.
        distributed : None, False, torch.distributed.ProcessGroup or Strategy, default=None
            Data-parallel training (``doc/howto/distributed.md``). ``None``: when
            ``torch.distributed`` is initialised with several processes (``torchrun``), every
            rank runs this same fit on its share of the batches (each rank draws its own
            negatives), and all end with the same model; else one process. ``False``: one
            process even then. A process group: over its ranks. A strategy of
            ``skvqgnn.distributed``.

        Returns
        -------
        self
        """
        if isinstance(A, PairSet):
            A, X, t = view_arguments(A, X, t)  # fit(pairs, t)
            if X is not None:
                raise TypeError("fit(pairs, t) takes no X: the pairs' graph holds the features")
            if t is None:
                raise TypeError("fit(pairs, t) needs the 0/1 targets t")
            graph = A.graph
            pairs = A.pairs
            targets = _check_targets(t, len(pairs))
            explicit = True
        else:
            if t is not None:
                raise TypeError(
                    "fit(A, X) takes no targets: the edges of A are the positives. To give pairs "
                    "and targets, call fit(Graph(A, X).pairs(P), t)"
                )
            if isinstance(A, NodeSet):
                raise TypeError(
                    "a link predictor is fitted on an adjacency (fit(A, X)) or on a PairSet "
                    "(fit(Graph(A, X).pairs(P), t)), not on a NodeSet"
                )
            nodes = resolve_graph(A, X)[0]
            _check_not_empty(nodes)
            graph = nodes.graph
            pairs = candidate_edges(graph.A, graph.is_symmetric)
            targets = np.ones(len(pairs), dtype=np.int64)
            explicit = False
        if not (targets == 1).any():
            raise ValueError(
                "there is no positive pair to train on"
                + (": t has no 1" if explicit else ": A has no edge other than self-loops")
            )
        if self.n_negatives == 0 and not (targets == 0).any():
            raise ValueError("n_negatives=0 needs negative pairs (t == 0) among the training pairs")
        self._hidden_sizes()
        strategy = resolve_strategy(distributed, self._device())
        rs, seed = self._fit_random_state(strategy)
        n = graph.n_nodes
        undirected = graph.is_symmetric

        val_pairs = np.zeros((0, 2), dtype=np.int64)
        if self.early_stopping:
            pos_ids = np.flatnonzero(targets == 1)
            n_val = max(1, int(round(self.validation_fraction * len(pos_ids))))
            if n_val >= len(pos_ids):
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} leaves no positive pair to "
                    f"train on ({len(pos_ids)} positives)"
                )
            held = np.sort(rs.choice(pos_ids, n_val, replace=False))
            val_pairs = pairs[held]
            keep = np.ones(len(pairs), dtype=bool)
            keep[held] = False
            pairs, targets = pairs[keep], targets[keep]

        positives = pairs[targets == 1]
        if explicit:
            mp_A = _adjacency_of(graph, positives)
        elif len(val_pairs):
            mp_A = without_pairs(graph.A, val_pairs, undirected)
        else:
            mp_A = None
        if mp_A is None:
            mp_graph = graph
            self.message_passing_adjacency_ = None
            self.pair_graph_fingerprint_ = None
        else:
            key = ("message_passing", csr_digest(mp_A))
            mp_graph = graph.cached(key, lambda: Graph._validated(mp_A, graph.X))
            self.message_passing_adjacency_ = mp_graph.A
            self.pair_graph_fingerprint_ = graph.fingerprint

        known = np.concatenate([pair_keys(positives, n), pair_keys(val_pairs, n)])
        sampler_rng = np.random.default_rng(seed + 1)
        negatives = _NegativeSampler(n, known if self.negative_sampling == "exclude" else None)
        val_nodes = np.zeros(0, dtype=np.int64)
        val = None
        if len(val_pairs):
            which, w = negatives.sample(val_pairs[:, 0], sampler_rng)
            negs = np.stack([val_pairs[which, 0], w], 1)
            val_all = np.concatenate([val_pairs, negs])
            val_t = np.concatenate([np.ones(len(val_pairs)), np.zeros(len(negs))]).astype(int)
            val = (val_all, val_t)
            val_nodes = np.unique(val_all)

        task = LinkPrediction(
            pairs,
            targets,
            n,
            negatives,
            sampler_rng if strategy.rank == 0 else np.random.default_rng([seed + 1, strategy.rank]),
            self.embedding_dim,
            self.n_negatives,
            self.partner_nodes,
            self.negative_nodes,
            val,
        )
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = graph.n_features
        self.crossing_fraction_ = self._crossing_fraction(mp_graph, pairs[targets == 1], seed)
        self._fit_graph(mp_graph, val_nodes, seed, task, callbacks, strategy)
        return self

    # -- inference -------------------------------------------------------------------------------
    def _resolve_pairs(self, A: Any, X: Any, pairs: Any) -> tuple[Graph, np.ndarray]:
        """(message-passing graph, pairs (m, 2)) of ``(pairs_view)`` or ``(A, X, pairs)``."""
        check_is_fitted(self, "model_")
        if isinstance(A, PairSet):
            if X is not None or pairs is not None:
                raise TypeError("pass either a PairSet alone or (A, X, pairs)")
            graph, P = A.graph, A.pairs
            check_is_fitted(self, "model_")
            stored = self.message_passing_adjacency_
            if stored is not None and graph.fingerprint == self.pair_graph_fingerprint_:
                key = ("message_passing", csr_digest(stored))
                graph = graph.cached(key, lambda: Graph._validated(stored, A.graph.X))
            return graph, P
        if pairs is None:
            raise TypeError(
                "pass either a PairSet (Graph(A, X).pairs(P)) or the adjacency A, the node "
                "features X and the pairs (m, 2)"
            )
        graph = resolve_graph(A, X)[0].graph
        return graph, check_pairs(pairs, graph.n_nodes)

    def _scores(self, graph: Graph, pairs: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "model_")
        nodes = np.unique(pairs)
        if len(nodes) == 0:
            return np.zeros(0, dtype=np.float32)
        Z = self._decision(graph.nodes(nodes))
        head = self.head_.eval()
        out = np.empty(len(pairs), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(pairs), _SCORE_CHUNK):
                P = pairs[start : start + _SCORE_CHUNK]
                z_u = Z[torch.from_numpy(np.searchsorted(nodes, P[:, 0]))]
                z_v = Z[torch.from_numpy(np.searchsorted(nodes, P[:, 1]))]
                out[start : start + len(P)] = head(z_u, z_v).numpy()
        return out

    def decision_function(self, A: Any, X: Any = None, pairs: Any = None) -> np.ndarray:
        """Pair scores (logits), shape (m,): ``decision_function(pairs_view)`` or
        ``decision_function(A, X, pairs)``.

        A ``PairSet`` of the graph the model was fitted on with ``fit(pairs, t)`` is scored with
        message passing over the training positives only; any other graph (``(A, X)``, or a
        ``PairSet`` of another graph) passes messages over its own adjacency.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), or PairSet
            Adjacency to pass messages over, or a ``PairSet`` (then ``X`` and ``pairs`` are not
            given).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.
        pairs : array-like of int of shape (m, 2), default=None
            Node pairs ``(u, v)`` to score, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (m,)
            One logit per pair; higher means more likely a link.
        """
        graph, P = self._resolve_pairs(A, X, pairs)
        return self._scores(graph, P)

    def predict_proba(self, A: Any, X: Any = None, pairs: Any = None) -> np.ndarray:
        """Probabilities of no link / link, shape (m, 2).

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), or PairSet
            Adjacency to pass messages over, or a ``PairSet`` (then ``X`` and ``pairs`` are not
            given).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.
        pairs : array-like of int of shape (m, 2), default=None
            Node pairs ``(u, v)`` to score, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (m, 2)
            Column 0: no link, column 1: link (the sigmoid of ``decision_function``).
        """
        p = expit(self.decision_function(A, X, pairs).astype(np.float64))
        return np.stack([1.0 - p, p], 1)

    def predict(self, A: Any, X: Any = None, pairs: Any = None) -> np.ndarray:
        """1 where the link probability is at least 0.5, else 0; shape (m,).

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), or PairSet
            Adjacency to pass messages over, or a ``PairSet`` (then ``X`` and ``pairs`` are not
            given).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.
        pairs : array-like of int of shape (m, 2), default=None
            Node pairs ``(u, v)`` to score, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (m,), dtype int64
        """
        return (self.decision_function(A, X, pairs) >= 0).astype(np.int64)

    def score(self, A: Any, X: Any = None, pairs: Any = None, t: Any = None) -> float:
        """ROC AUC of the pair scores: ``score(pairs_view, t)`` or ``score(A, X, pairs, t)``.

        ROC AUC, not accuracy: it does not depend on a threshold or on the ratio of negatives
        to positives. ``skvqgnn.metrics`` has Hits@K and MRR scorers for ``GridSearchCV``.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), or PairSet
            Adjacency to pass messages over, or a ``PairSet`` (then the second argument is
            ``t``).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.
        pairs : array-like of int of shape (m, 2), default=None
            Node pairs ``(u, v)`` to score, when ``A`` is an adjacency.
        t : array-like of shape (m,), default=None
            0/1 targets of the pairs (1 = link); both values must occur.

        Returns
        -------
        float
            ROC AUC in [0, 1].
        """
        if isinstance(A, PairSet):
            A, X, t = view_arguments(A, X, t)
            graph, P = self._resolve_pairs(A, X, None)
        else:
            graph, P = self._resolve_pairs(A, X, pairs)
        return roc_auc(_check_targets(t, len(P)), self._scores(graph, P))

    def embed(self, A: Any, X: Any = None) -> np.ndarray:
        """Node embeddings ``z`` (n_nodes_or_view, embedding_dim) of ``(A, X)`` or a NodeSet,
        with message passing over that graph.

        Parameters
        ----------
        A : sparse matrix of shape (n_nodes, n_nodes), Graph, or NodeSet
            Adjacency, or a ``Graph`` or ``NodeSet`` view (then ``X`` is not given).
        X : array-like or sparse matrix of shape (n_nodes, n_features), default=None
            Node features, when ``A`` is an adjacency.

        Returns
        -------
        ndarray of shape (n, embedding_dim)
            One row per node of the graph, or of the view.
        """
        check_is_fitted(self, "model_")  # before the inputs: unfitted is the first error
        nodes, _ = resolve_graph(A, X)
        return self._decision(nodes).numpy()
