"""Product vector-quantisation codebooks and the host-side assignment table.

A layer input of width ``f`` is cut into ``P = ceil(f / D)`` contiguous slices of width ``D``
(zero-padded at the end). Each slice ``p`` has ``k`` feature codewords, the mean layer input of
their members (Eq. 6's X̃), and ``k`` gradient codewords, the mean gradient of their members'
aggregated messages per out-of-batch convolution (Eq. 7's G̃); every node ``j`` has a feature code
and a gradient code per slice, kept on the host in an ``AssignmentTable``. Both codebooks are
exponential-moving-average sums in the original scale; standardisation (division by a running
standard deviation, initialised from data) is used only inside the assignment distances.

Where the paper's steps are: the codeword search (nearest codeword per slice) is
``ProductCodebook.assign`` and ``assign_gradients`` (through ``_nearest``); the EMA update of
the codewords (online k-means, Appendix E) is ``ProductCodebook.apply_statistics``, one EMA
step from the summed statistics of one or several batches (``feature_statistics``,
``gradient_statistics``, ``calibration_statistics``; ``update`` and ``update_gradients`` do both
for one batch); Eq. 6 and Eq. 7, which read the codewords, are the convolution kinds'
``messages`` and ``blue_messages`` (``skvqgnn.convolutions``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ProductCodebook", "AssignmentTable", "kmeans"]

# elements of a (P, rows, k) distance block computed at once: on the CPU a block that stays in
# the cache (1 MiB) is about 1.5x faster than one large one; on a GPU fewer launches win
_CHUNK = {"cpu": 1 << 18}
_CHUNK_DEFAULT = 1 << 24


def n_slices(n_features: int, codeword_dim: int) -> int:
    return math.ceil(n_features / codeword_dim)


def ema_inplace(avg: Tensor, new: Tensor, decay: float) -> None:
    avg.mul_(decay).add_(new, alpha=1.0 - decay)


def laplace_smoothing(counts: Tensor, eps: float) -> Tensor:
    """Counts with a little mass on every codeword, same total per slice: (P, k)."""
    total = counts.sum(dim=-1, keepdim=True)
    k = counts.shape[-1]
    return (counts + eps) / (total + k * eps) * total.clamp_min(eps)


def _nearest(x: Tensor | list[Tensor], codewords: Tensor | list[Tensor]) -> Tensor:
    """Nearest codeword per slice: (m, P) long.

    ``x`` is (P, m, E) or a list of (P, m, E_i) whose concatenation along the last axis are
    the rows; ``codewords`` is (P, k, E) or a list of (P, k, E_i) concatenated alike. Ties go to
    the first codeword, and NaN counts as the smallest distance.

    ``‖c‖² - 2⟨x, c⟩`` (the part of the squared distance that depends on ``c``) as one
    product of ``[x, 1]`` and ``[-2c, ‖c‖²]``, block by block of rows into one reused buffer
    that stays in cache: the product's inner dimension is small, so writing the distances is
    its cost, and a fresh block each time would be paged in anew. The minimum's index comes
    from NumPy's ``argmin`` on the CPU, which is vectorised where torch's CPU ``min(dim)`` is a
    scalar loop (2.4x slower on a (16, 1024, 256) block), written straight into the result;
    on other devices from torch's ``min``."""
    xs = x if isinstance(x, list) else [x]
    words = codewords if isinstance(codewords, list) else [codewords]
    P, m = xs[0].shape[:2]
    E = sum(part.shape[-1] for part in xs)
    rows = torch.empty(P, m, E + 1, dtype=xs[0].dtype, device=xs[0].device)  # [x, 1]
    at = 0
    for part in xs:
        rows[..., at : at + part.shape[-1]] = part
        at += part.shape[-1]
    rows[..., E] = 1.0
    c = words[0] if len(words) == 1 else torch.cat(words, -1)
    k = c.shape[1]
    c_sq = (c * c).sum(-1, keepdim=True)  # (P, k, 1)
    stacked = torch.cat([-2.0 * c, c_sq], -1).transpose(1, 2)  # (P, E + 1, k)
    device = rows.device
    step = max(1, min(m, _CHUNK.get(device.type, _CHUNK_DEFAULT) // max(1, P * k)))
    buffer = torch.empty(P * step * k, dtype=rows.dtype, device=device)
    full = buffer.view(P, step, k)
    on_cpu = device.type == "cpu"
    out = torch.empty(m, P, dtype=torch.long, device=device)
    target = out.numpy().T if on_cpu else out.T  # (P, m), written block by block
    full_array = full.numpy() if on_cpu else None
    for start, block in zip(range(0, m, step), rows.split(step, 1), strict=True):
        s = block.shape[1]
        dist = full if s == step else buffer[: P * s * k].view(P, s, k)
        torch.bmm(block, stacked, out=dist)
        if on_cpu:
            array = full_array if s == step else dist.numpy()
            np.argmin(array, axis=-1, out=target[:, start : start + s])
        else:
            target[:, start : start + s] = dist.min(dim=-1).indices
    return out


def kmeans(x: Tensor, k: int, n_iter: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Batched k-means++ seeding plus Lloyd iterations, one problem per slice.

    Parameters
    ----------
    x : Tensor of shape (P, m, E)
    k : number of centroids per slice.

    Returns
    -------
    centroids : (P, k, E)
    codes : (P, m) long
    """
    P, m, E = x.shape
    centroids = torch.empty(P, k, E, dtype=x.dtype, device=x.device)
    rows = torch.arange(P, device=x.device)
    first = torch.randint(m, (P,), generator=generator, device="cpu").to(x.device)
    centroids[:, 0] = x[rows, first]
    d2 = ((x - centroids[:, :1]) ** 2).sum(-1)  # (P, m)
    uniform = torch.rand(P, k, generator=generator).to(x.device)
    for c in range(1, k):
        # D² sampling by inverse CDF; once every point is covered (k >= distinct points) the
        # cumulative sum is flat and any index will do
        cdf = d2.clamp_min(0).cumsum(-1)  # (P, m)
        target = uniform[:, c : c + 1] * cdf[:, -1:]
        pick = torch.searchsorted(cdf, target).squeeze(1).clamp_max(m - 1)
        centroids[:, c] = x[rows, pick]
        d2 = torch.minimum(d2, ((x - centroids[:, c : c + 1]) ** 2).sum(-1))
    codes = _nearest(x, centroids).T
    for _ in range(n_iter):
        flat = (codes + rows[:, None] * k).reshape(-1)
        sums = torch.zeros(P * k, E, dtype=x.dtype, device=x.device)
        sums.index_add_(0, flat, x.reshape(P * m, E))
        cnt = torch.bincount(flat, minlength=P * k).to(x.dtype).unsqueeze(1)
        # empty clusters keep their previous centroid
        new = torch.where(cnt > 0, sums / cnt.clamp_min(1), centroids.reshape(P * k, E))
        centroids = new.reshape(P, k, E)
        codes = _nearest(x, centroids).T
    return centroids, codes


class ProductCodebook(nn.Module):
    """Feature and gradient codewords of one layer input, updated by EMA online k-means.

    Every node has two assignments per slice. Its **feature code** picks the feature codeword
    nearest to its layer input (features only): the forward pass reads out-of-batch senders from
    these codewords (Eq. 6's X̃). Its **gradient code** picks the gradient codeword nearest in
    the joint space of the standardised input and ``grad_scale`` times the standardised
    gradient (and any auxiliary scalars): the backward pass reads out-of-batch receivers from
    these codewords (Eq. 7's G̃), each of which keeps the mean input, mean gradient per channel
    and mean auxiliary scalars of its members. Separate assignments let each codebook serve its
    own pass: a single joint assignment trades the forward messages' accuracy for the
    gradients' (measured: twice the relative error of the reconstructed inputs at
    ``grad_scale=1``).

    Sums are kept in the original scale; standardisation by the running moments is used only
    inside the assignment distances. The gradient moments start from the first batch that has
    gradients, not from 1: measured gradient variances are 1e-8 to 1e-6.

    Parameters
    ----------
    n_features : int
        Width ``f`` of the quantised layer input.
    n_codewords : int
        Codewords per slice, ``k``, in each of the two codebooks.
    codeword_dim : int
        Slice width ``D``.
    n_grad : int
        Number of gradient channels: one per convolution with out-of-batch messages (per head
        for attention).
    decay : float
        EMA decay ``γ``.
    grad_scale : float
        Weight of the standardised gradient next to the standardised input in the distance of
        the gradient codes (0: inputs only).
    eps : float
        Laplace smoothing of the cluster sizes.
    n_aux : int
        Per-node scalars averaged by the gradient codewords and included in their distance (a
        learnable convolution's receiver-side quantities, see ``layers.attention_blue``). Each
        slice keeps its own average; a node's estimate is the mean over its slices' codewords.

    Buffers
    -------
    counts : (P, k)              EMA sizes ``N`` of the feature codewords
    feature_sums : (P, k, D)     EMA sums ``S`` of their members' inputs
    grad_counts : (P, k)         EMA sizes of the gradient codewords (members with a known
                                 gradient only)
    grad_feature_sums : (P, k, D) EMA sums of the gradient codewords' members' inputs
    grad_sums : (n_grad, P, k, D) EMA sums of their members' gradients
    aux_sums : (n_aux, P, k)     EMA sums of their members' auxiliary scalars
    feature_mean, feature_var : (P, D); grad_mean, grad_var : (n_grad, P, D);
    aux_mean, aux_var : (n_aux,)  running moments for the standardisation
    grad_moments_set : ()        whether the gradient moments hold data yet
    trust_num, trust_den : (2, n_grad)  EMA of ⟨predicted, measured⟩ and ‖predicted‖² of the
                                 gradients of batch nodes (``calibrate``), per node (row 0)
                                 and of their batch sums (row 1), whose ratios scale the
                                 backward messages (``grad_trust``)
    """

    def __init__(
        self,
        n_features: int,
        n_codewords: int,
        codeword_dim: int = 4,
        n_grad: int = 1,
        decay: float = 0.99,
        grad_scale: float = 1.0,
        eps: float = 1e-8,
        n_aux: int = 0,
    ):
        super().__init__()
        self.n_features = n_features
        self.n_codewords = n_codewords
        self.codeword_dim = codeword_dim
        self.n_grad = n_grad
        self.n_aux = n_aux
        self.decay = decay
        # EMA decay of the gradient codewords; the estimator sets it per fit so that they
        # average the gradients of the last epoch (each node once, at the current parameters)
        self.grad_decay = decay
        self.grad_scale = grad_scale
        self.eps = eps
        P, k, D = n_slices(n_features, codeword_dim), n_codewords, codeword_dim
        self.n_slices = P
        self.register_buffer("counts", torch.zeros(P, k))
        self.register_buffer("feature_sums", torch.zeros(P, k, D))
        self.register_buffer("feature_mean", torch.zeros(P, D))
        self.register_buffer("feature_var", torch.ones(P, D))
        self.register_buffer("grad_counts", torch.zeros(P, k))
        self.register_buffer("grad_feature_sums", torch.zeros(P, k, D))
        self.register_buffer("grad_sums", torch.zeros(n_grad, P, k, D))
        self.register_buffer("aux_sums", torch.zeros(n_aux, P, k))
        self.register_buffer("grad_mean", torch.zeros(n_grad, P, D))
        self.register_buffer("grad_var", torch.ones(n_grad, P, D))
        self.register_buffer("aux_mean", torch.zeros(n_aux))
        self.register_buffer("aux_var", torch.ones(n_aux))
        self.register_buffer("grad_moments_set", torch.zeros((), dtype=torch.bool))
        self.register_buffer("trust_num", torch.zeros(2, n_grad))
        self.register_buffer("trust_den", torch.zeros(2, n_grad))

    # -- views -------------------------------------------------------------------------------
    def split(self, x: Tensor) -> Tensor:
        """(..., f) -> (..., P, D), zero-padding the last slice."""
        pad = self.n_slices * self.codeword_dim - x.shape[-1]
        if pad:
            x = nn.functional.pad(x, (0, pad))
        return x.reshape(*x.shape[:-1], self.n_slices, self.codeword_dim)

    def merge(self, x: Tensor) -> Tensor:
        """(..., P, D) -> (..., f), dropping the padding."""
        return x.reshape(*x.shape[:-2], -1)[..., : self.n_features]

    def _sizes(self) -> Tensor:
        return laplace_smoothing(self.counts, self.eps).clamp_min(1e-12).unsqueeze(-1)

    def _grad_sizes(self) -> Tensor:
        return laplace_smoothing(self.grad_counts, self.eps).clamp_min(1e-12)  # (P, k)

    @property
    def codewords(self) -> Tensor:
        """Feature codewords X̃: (P, k, D)."""
        return self.feature_sums / self._sizes()

    @property
    def grad_codewords(self) -> Tensor:
        """Gradient codewords G̃: (n_grad, P, k, D)."""
        return self.grad_sums / self._grad_sizes().unsqueeze(-1).unsqueeze(0)

    @property
    def grad_feature_codewords(self) -> Tensor:
        """Mean input of each gradient codeword's members: (P, k, D)."""
        return self.grad_feature_sums / self._grad_sizes().unsqueeze(-1)

    @property
    def aux_codewords(self) -> Tensor:
        """Per-slice averages of the auxiliary scalars: (n_aux, P, k)."""
        return self.aux_sums / self._grad_sizes().unsqueeze(0)

    @property
    def grad_trust(self) -> Tensor:
        """Scale of the backward messages per gradient channel (n_grad,), in [0, 1].

        The smaller of two least-squares coefficients of the batch nodes' measured gradients on
        what their gradient codes predicted before the step (``calibrate``), each EMA-averaged
        with the gradient codewords' decay (about an epoch of batches): node by node, and of
        the batch sums. The second is what the parameters see: a layer's weight gradient sums
        the nodes' gradients, whose large per-node parts cancel, so a small shared error of the
        codewords (they are about an epoch old) can turn the sum around while every node's
        gradient is predicted well. Each is 1 when the codewords predict the measured
        gradients, smaller when they overshoot or point elsewhere. 0 until a prediction could
        be compared (in the first epoch most batch nodes have no earlier gradient code):
        starting at 1, the paper's unscaled messages, made gin at 2 hidden layers with random
        batches fall from 0.99 to 0.85 in ``tests/test_classifier.py``'s floor test.
        """
        ratio = self.trust_num / self.trust_den.clamp_min(1e-30)
        ratio = torch.where(self.trust_den > 0, ratio.clamp(0.0, 1.0), torch.zeros_like(ratio))
        return ratio.min(0).values

    def pick(self, words: Tensor, codes: Tensor) -> Tensor:
        """Each row's codeword per slice: ``words`` (..., P, k, D) under ``codes`` (m, P) ->
        (..., m, P, D). One ``index_select`` of the stacked codewords, several times faster on
        the CPU than indexing by (slice, code) pairs."""
        *lead, P, k, D = words.shape
        stacked = words.reshape(*lead, P * k, D)
        return stacked.index_select(len(lead), self._flat(codes)).view(*lead, *codes.shape, D)

    def lookup(self, codes: Tensor) -> Tensor:
        """Feature reconstructions (m, f) of nodes with feature ``codes`` (m, P)."""
        return self.merge(self.pick(self.codewords, codes))

    def lookup_gradients(self, codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """What the gradient codewords ``codes`` (m, P) hold: mean inputs (m, f), gradients
        (n_grad, m, f) and auxiliary scalars (n_aux, m), the mean over slices."""
        slices = torch.arange(self.n_slices, device=codes.device)
        x = self.merge(self.grad_feature_codewords[slices, codes])
        g = self.merge(self.grad_codewords[:, slices, codes])
        aux = self.aux_codewords[:, slices, codes].mean(-1)
        return x, g, aux

    # -- assignment ----------------------------------------------------------------------------
    def _inverse_std(self) -> Tensor:
        return self.feature_var.clamp_min(1e-20).rsqrt()  # (P, D)

    @torch.no_grad()
    def assign(self, x: Tensor) -> Tensor:
        """Feature codes (m, P) of rows ``x`` (m, P, D): the nearest feature codeword per slice
        in the standardised input space."""
        inv = self._inverse_std()
        data = (x * inv).transpose(0, 1)  # (P, m, D)
        return _nearest(data, self.codewords * inv.unsqueeze(1))

    @torch.no_grad()
    def assign_gradients(self, x: Tensor, g: Tensor, aux: Tensor | None = None) -> Tensor:
        """Gradient codes (m, P) of rows with inputs ``x`` (m, P, D), gradients ``g``
        (S, m, P, D) and auxiliary scalars ``aux`` (n_aux, m), which every slice's distance
        includes. Before the gradient moments are set the distance uses the inputs only."""
        inv_x = self._inverse_std()
        data = [(x * inv_x).transpose(0, 1)]  # (P, m, D)
        cw = [self.grad_feature_codewords * inv_x.unsqueeze(1)]
        if self.grad_scale > 0 and bool(self.grad_moments_set):
            P, m = self.n_slices, x.shape[0]
            inv_g = self.grad_var.clamp_min(1e-20).rsqrt() * self.grad_scale  # (S, P, D)
            data.append((g * inv_g.unsqueeze(1)).permute(2, 1, 0, 3).reshape(P, m, -1))
            gc = self.grad_codewords * inv_g.unsqueeze(2)  # (S, P, k, D)
            cw.append(gc.permute(1, 2, 0, 3).reshape(P, self.n_codewords, -1))
            if self.n_aux:
                inv_a = self.aux_var.clamp_min(1e-20).rsqrt() * self.grad_scale  # (n_aux,)
                data.append((aux * inv_a[:, None]).T.unsqueeze(0).expand(P, -1, -1))
                cw.append((self.aux_codewords * inv_a[:, None, None]).permute(1, 2, 0))
        return _nearest(data, cw)

    # -- updates -------------------------------------------------------------------------------
    def _flat(self, codes: Tensor) -> Tensor:
        """Codes (m, P) as indices into the stacked codewords of every slice: (m·P,)."""
        P, k = self.n_slices, self.n_codewords
        return (codes + torch.arange(P, device=codes.device) * k).reshape(-1)

    def _counts(self, flat: Tensor) -> Tensor:
        """Members per codeword (P, k) of the stacked ``flat`` codes (`_flat`)."""
        return torch.bincount(flat, minlength=self.n_slices * self.n_codewords).view(
            self.n_slices, self.n_codewords
        )

    def _scatter(self, flat: Tensor, values: Tensor) -> Tensor:
        """Per-codeword sums of ``values`` (m, P, ...) under the stacked codes ``flat`` (m·P,)
        (`_flat`): (P, k, ...)."""
        m, P = values.shape[:2]
        rest = values.shape[2:]
        out = torch.zeros(P * self.n_codewords, *rest, dtype=values.dtype, device=values.device)
        out.index_add_(0, flat, values.reshape(m * P, *rest))
        return out.reshape(P, self.n_codewords, *rest)

    def empty_statistics(self) -> dict[str, Tensor]:
        """Zero statistics of no batch, in float64: what `feature_statistics`,
        `gradient_statistics` and `calibration_statistics` add to and `apply_statistics` reads.

        Every entry is a sum over batches (and, in data-parallel training, over processes, by
        one all-reduce): the EMA step of a group of ``G`` batches searched against the same
        codebooks takes their mean with decay ``γ^G``, which for one batch is the usual step.
        Moments are sums of the rows' deviations from the running mean (the same on every
        process), whose first two powers give the pooled mean and variance of the group."""
        P, k, D, S, A = self.n_slices, self.n_codewords, self.codeword_dim, self.n_grad, self.n_aux
        shapes = {
            "f.batches": (),
            "f.counts": (P, k),
            "f.sums": (P, k, D),
            "f.rows": (),
            "f.moment1": (P, D),
            "f.moment2": (P, D),
            "g.batches": (),
            "g.counts": (P, k),
            "g.feature_sums": (P, k, D),
            "g.sums": (S, P, k, D),
            "g.aux_sums": (A, P, k),
            "g.rows": (),
            "g.moment1": (S, P, D),
            "g.moment2": (S, P, D),
            "g.aux1": (A,),
            "g.aux2": (A,),
            "t.batches": (),
            "t.num": (2, S),
            "t.den": (2, S),
        }
        device = self.counts.device
        f64 = torch.float64
        return {key: torch.zeros(s, dtype=f64, device=device) for key, s in shapes.items()}

    @torch.no_grad()
    def feature_statistics(self, into: dict[str, Tensor], x: Tensor, codes: Tensor) -> None:
        """Add a batch's inputs ``x`` (b, P, D) under their feature ``codes`` (b, P) to the
        statistics ``into``."""
        flat = self._flat(codes)
        dev = (x - self.feature_mean).double()
        into["f.batches"] += 1
        into["f.counts"] += self._counts(flat)
        into["f.sums"] += self._scatter(flat, x)
        into["f.rows"] += x.shape[0]
        into["f.moment1"] += dev.sum(0)
        into["f.moment2"] += (dev * dev).sum(0)

    @torch.no_grad()
    def gradient_statistics(
        self, into: dict[str, Tensor], x: Tensor, g: Tensor, codes: Tensor, aux: Tensor | None
    ) -> None:
        """Add rows with known gradients to the statistics ``into``: inputs ``x`` (r, P, D),
        gradients ``g`` (S, r, P, D), auxiliary scalars ``aux`` (n_aux, r), gradient ``codes``
        (r, P)."""
        if x.shape[0] == 0:
            return
        flat = self._flat(codes)
        r, P, D = x.shape
        S = g.shape[0]
        into["g.batches"] += 1
        into["g.counts"] += self._counts(flat)
        # inputs and every channel's gradients summed by one scatter: (r, P, (1 + S)·D)
        both = torch.cat([x, g.permute(1, 2, 0, 3).reshape(r, P, S * D)], -1)
        sums = self._scatter(flat, both)  # (P, k, (1 + S)·D)
        into["g.feature_sums"] += sums[..., :D]
        into["g.sums"] += sums[..., D:].reshape(P, self.n_codewords, S, D).permute(2, 0, 1, 3)
        into["g.rows"] += x.shape[0]
        dev = (g.permute(1, 0, 2, 3) - self.grad_mean).double()  # (r, S, P, D)
        into["g.moment1"] += dev.sum(0)
        into["g.moment2"] += (dev * dev).sum(0)
        if self.n_aux:
            a = aux.T.unsqueeze(1).expand(-1, self.n_slices, -1)  # (r, P, n_aux)
            into["g.aux_sums"] += self._scatter(flat, a).permute(2, 0, 1)
            dev = (aux.T - self.aux_mean).double()  # (r, n_aux)
            into["g.aux1"] += dev.sum(0)
            into["g.aux2"] += (dev * dev).sum(0)

    @torch.no_grad()
    def calibration_statistics(self, into: dict[str, Tensor], g: Tensor, codes: Tensor) -> None:
        """Add the agreement of measured gradients ``g`` (S, r, P, D) of batch rows with what
        their gradient ``codes`` (r, P) of before this step predicted to ``into`` (see
        ``grad_trust``). A batch node stands in for the out-of-batch receivers here: its code
        is as old as theirs (assigned when it was last in a batch)."""
        if g.shape[1] == 0:
            return
        pred = self.pick(self.grad_codewords, codes)  # (S, r, P, D)
        ps, gs = pred.sum(1), g.sum(1)  # (S, P, D): what the parameters see
        into["t.batches"] += 1
        into["t.num"] += torch.stack([(pred * g).sum((1, 2, 3)), (ps * gs).sum((1, 2))])
        into["t.den"] += torch.stack([(pred * pred).sum((1, 2, 3)), (ps * ps).sum((1, 2))])

    @torch.no_grad()
    def apply_statistics(self, stats: dict[str, Tensor]) -> None:
        """One EMA step of both codebooks, their moments and ``grad_trust`` from the
        statistics of a group of batches (each part only if a batch contributed to it)."""
        G = float(stats["f.batches"])
        if G > 0:
            decay = self.decay**G
            ema_inplace(self.counts, (stats["f.counts"] / G).float(), decay)
            ema_inplace(self.feature_sums, (stats["f.sums"] / G).float(), decay)
            m = stats["f.rows"], stats["f.moment1"], stats["f.moment2"]
            _moments_step(self.feature_mean, self.feature_var, *m, decay, False)
        G = float(stats["t.batches"])
        if G > 0:
            decay = self.grad_decay**G
            ema_inplace(self.trust_num, (stats["t.num"] / G).float(), decay)
            ema_inplace(self.trust_den, (stats["t.den"] / G).float(), decay)
        G = float(stats["g.batches"])
        if G > 0:
            decay = self.grad_decay**G
            ema_inplace(self.grad_counts, (stats["g.counts"] / G).float(), decay)
            ema_inplace(self.grad_feature_sums, (stats["g.feature_sums"] / G).float(), decay)
            ema_inplace(self.grad_sums, (stats["g.sums"] / G).float(), decay)
            if self.n_aux:
                ema_inplace(self.aux_sums, (stats["g.aux_sums"] / G).float(), decay)
            first = not bool(self.grad_moments_set)
            n = stats["g.rows"]
            moments = stats["g.moment1"], stats["g.moment2"]
            if _moments_step(self.grad_mean, self.grad_var, n, *moments, decay, first):
                if self.n_aux:
                    a = stats["g.aux1"], stats["g.aux2"]
                    _moments_step(self.aux_mean, self.aux_var, n, *a, decay, first)
                self.grad_moments_set.fill_(True)

    @torch.no_grad()
    def update(self, x: Tensor, codes: Tensor) -> None:
        """One EMA step of the feature codewords: batch inputs ``x`` (b, P, D) under their
        feature ``codes`` (b, P)."""
        stats = self.empty_statistics()
        self.feature_statistics(stats, x, codes)
        self.apply_statistics(stats)

    @torch.no_grad()
    def update_gradients(
        self,
        x: Tensor,
        g: Tensor,
        codes: Tensor,
        weight: Tensor | None = None,
        aux: Tensor | None = None,
    ) -> None:
        """One EMA step of the gradient codewords: inputs ``x`` (b, P, D), gradients ``g``
        (S, b, P, D) and auxiliary scalars ``aux`` (n_aux, b) under gradient ``codes`` (b, P).

        ``weight`` (b,) in {0, 1} restricts the step to the marked rows, the nodes whose gradient
        is known (every row by default); a batch with no marked row leaves the codewords as
        they are, so unknown gradients never enter them as zeros.
        """
        if weight is not None:
            rows = weight.bool()
            x, g, codes = x[rows], g[:, rows], codes[rows]
            aux = None if aux is None else aux[:, rows]
        stats = self.empty_statistics()
        self.gradient_statistics(stats, x, g, codes, aux)
        self.apply_statistics(stats)

    @torch.no_grad()
    def calibrate(self, g: Tensor, codes: Tensor, weight: Tensor | None = None) -> None:
        """Fold the agreement of measured gradients ``g`` (S, b, P, D) with what their gradient
        ``codes`` (b, P) predicted into ``grad_trust`` (rows marked by ``weight`` only)."""
        if weight is not None:
            rows = weight.bool()
            g, codes = g[:, rows], codes[rows]
        stats = self.empty_statistics()
        self.calibration_statistics(stats, g, codes)
        self.apply_statistics(stats)

    @torch.no_grad()
    def seed(
        self, mean: Tensor, var: Tensor, sample: Tensor, generator: torch.Generator, n_iter: int
    ) -> None:
        """Start from data: the standardisation moments ``mean``, ``var`` (P, D) of the inputs,
        and k-means centroids of ``sample`` (m, P, D) as feature codewords, each with a token
        mass until ``settle`` gives them their members. Gradient parts start empty."""
        self.feature_mean.copy_(mean)
        self.feature_var.copy_(var)
        inv = self._inverse_std()  # (P, D)
        centroids, _ = kmeans((sample * inv).transpose(0, 1), self.n_codewords, n_iter, generator)
        centroids = centroids / inv.unsqueeze(1)  # (P, k, D)
        self.counts.fill_(self.eps)
        self.feature_sums.copy_(centroids * self.eps)
        for buffer in (self.grad_sums, self.aux_sums, self.grad_mean, self.aux_mean):
            buffer.zero_()
        for buffer in (self.grad_var, self.aux_var):
            buffer.fill_(1.0)
        self.grad_moments_set.fill_(False)
        self.trust_num.zero_()
        self.trust_den.zero_()

    @torch.no_grad()
    def settle(self, count: Tensor, sums: Tensor, weight: float) -> None:
        """Set the feature codewords to the means of their members, whose number ``count``
        (P, k) and input sums ``sums`` (P, k, D) a pass over every node under the seeded
        codewords gave; ``weight`` scales both to the size of one batch, so that EMA updates
        blend in. Codewords no node chose keep their centroid with a token mass. The gradient
        codewords start at the same places with a token mass, so that their first members'
        data replaces them at once (no prior of zero gradients)."""
        empty = count == 0
        sums = torch.where(empty.unsqueeze(-1), self.feature_sums, sums * weight)
        self.counts.copy_(torch.where(empty, torch.full_like(count, self.eps), count * weight))
        self.feature_sums.copy_(sums)
        self.grad_counts.fill_(self.eps)
        self.grad_feature_sums.copy_(self.codewords * self.eps)

    @torch.no_grad()
    def recentre(self, count: Tensor, sums: Tensor) -> None:
        """Move every feature codeword with members to their mean, given their number ``count``
        (P, k) and input sums ``sums`` (P, k, D); the EMA sizes stay, and so do codewords
        without members (one Lloyd step on the feature codebook)."""
        means = sums / count.clamp_min(1).unsqueeze(-1)
        words = torch.where((count > 0).unsqueeze(-1), means, self.codewords)
        self.feature_sums.copy_(words * self._sizes())

    def member_sums(self, x: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Members (P, k) and input sums (P, k, D) of rows ``x`` (m, P, D) under ``codes``."""
        flat = self._flat(codes)
        return self._counts(flat).to(x.dtype), self._scatter(flat, x)

    def pick_reseeds(
        self, dead: Tensor, n_rows: int, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor] | None:
        """Slice and codeword indices of the ``dead`` (P, k) entries (codewords no node is
        assigned to) and, for each, a random row in ``range(n_rows)`` of the batch that
        re-seeds it; ``None`` if nothing is dead or there is no row. The draw depends on
        ``dead``, ``n_rows`` and ``generator`` only, so processes that share them agree."""
        slice_idx, word_idx = torch.nonzero(dead, as_tuple=True)
        if slice_idx.numel() == 0 or n_rows == 0:
            return None
        rows = torch.randint(n_rows, (slice_idx.numel(),), generator=generator)
        return slice_idx, word_idx, rows.to(dead.device)

    @torch.no_grad()
    def reseed(self, slice_idx: Tensor, word_idx: Tensor, x: Tensor) -> None:
        """Re-seed feature codewords ``(slice_idx, word_idx)`` at the slice rows ``x`` (n, D),
        each with the EMA mass of one batch's member."""
        mass = 1.0 - self.decay
        self.counts[slice_idx, word_idx] = mass
        self.feature_sums[slice_idx, word_idx] = x * mass

    @torch.no_grad()
    def reseed_gradients(
        self, slice_idx: Tensor, word_idx: Tensor, x: Tensor, g: Tensor, aux: Tensor
    ) -> None:
        """Re-seed gradient codewords ``(slice_idx, word_idx)`` at rows whose gradient is
        known: slice inputs ``x`` (n, D), gradients ``g`` (S, n, D), scalars ``aux`` (n_aux, n)."""
        mass = 1.0 - self.decay
        self.grad_counts[slice_idx, word_idx] = mass
        self.grad_feature_sums[slice_idx, word_idx] = x * mass
        self.grad_sums[:, slice_idx, word_idx] = g * mass
        if self.n_aux:
            self.aux_sums[:, slice_idx, word_idx] = aux * mass


def _moments_step(
    mean: Tensor, var: Tensor, n: Tensor, s1: Tensor, s2: Tensor, decay: float, first: bool
) -> bool:
    """EMA step of a per-entry running ``mean`` and ``var`` from ``n`` rows whose deviations
    from ``mean`` sum to ``s1`` and their squares to ``s2`` (float64); ``first`` sets them to
    the rows' moments instead. Needs two rows; returns whether it updated."""
    n = float(n)
    if n < 2:
        return False
    shift = s1 / n
    batch_mean = (mean.double() + shift).to(mean.dtype)
    batch_var = ((s2 - n * shift * shift) / (n - 1)).clamp_min(0).to(var.dtype)  # unbiased
    if first:
        mean.copy_(batch_mean)
        var.copy_(batch_var)
    else:
        ema_inplace(mean, batch_mean, decay)
        ema_inplace(var, batch_var, decay)
    return True


class AssignmentTable:
    """Host-side assignments of every node for one layer: feature codes and gradient codes per
    slice, with usage counts.

    Parameters
    ----------
    n_nodes, n_slices, n_codewords : int

    Attributes
    ----------
    codes : ndarray of shape (n_nodes, n_slices), the smallest integer type that holds k
        Feature codes (the forward messages).
    grad_codes : ndarray of shape (n_nodes, n_slices), same type
        Gradient codes (the backward messages).
    usage, grad_usage : ndarray of shape (n_slices, n_codewords)
        Nodes assigned to each feature / gradient codeword.
    """

    def __init__(self, n_nodes: int, n_slices: int, n_codewords: int):
        self.n_codewords = n_codewords
        self.codes = np.zeros((n_nodes, n_slices), dtype=np.min_scalar_type(n_codewords - 1))
        self.grad_codes = self.codes.copy()
        self.usage = np.zeros((n_slices, n_codewords), dtype=np.int64)
        self.usage[:, 0] = n_nodes
        self.grad_usage = self.usage.copy()

    def _flat(self, codes: np.ndarray) -> np.ndarray:
        offsets = np.arange(codes.shape[1], dtype=np.int64) * self.n_codewords
        return (codes.astype(np.int64) + offsets).ravel()

    def _set(self, table: np.ndarray, usage: np.ndarray, nodes: np.ndarray, codes: np.ndarray):
        old = table[nodes]
        size = usage.size
        usage -= np.bincount(self._flat(old), minlength=size).reshape(usage.shape)
        usage += np.bincount(self._flat(codes), minlength=size).reshape(usage.shape)
        table[nodes] = codes
        return int(np.count_nonzero(old != codes))

    def set(self, nodes: np.ndarray, codes: np.ndarray) -> int:
        """Feature codes of ``nodes``: (len(nodes), P); returns how many entries changed."""
        return self._set(self.codes, self.usage, nodes, codes)

    def set_gradients(self, nodes: np.ndarray, codes: np.ndarray) -> int:
        """Gradient codes of ``nodes``: (len(nodes), P); returns how many entries changed."""
        return self._set(self.grad_codes, self.grad_usage, nodes, codes)

    def set_both(self, nodes: np.ndarray, codes: np.ndarray) -> None:
        """The same codes (len(nodes), P) as feature and gradient codes of ``nodes``."""
        self.set(nodes, codes)
        self.set_gradients(nodes, codes)

    def replace(self, codes: np.ndarray, grad_codes: np.ndarray) -> None:
        """Every node's feature and gradient codes (n_nodes, P) at once, and the usage counts
        recomputed from them."""
        if codes is not self.codes:
            self.codes[:] = codes
        if grad_codes is not self.grad_codes:
            self.grad_codes[:] = grad_codes
        for table, usage in ((self.codes, self.usage), (self.grad_codes, self.grad_usage)):
            for p in range(table.shape[1]):  # slice by slice: no (n_nodes, P) int64 copy
                usage[p] = np.bincount(table[:, p], minlength=self.n_codewords)

    def unused(self) -> np.ndarray:
        """(P, k) bool: feature codewords no node is assigned to."""
        return self.usage == 0

    def grad_unused(self) -> np.ndarray:
        """(P, k) bool: gradient codewords no node is assigned to."""
        return self.grad_usage == 0
