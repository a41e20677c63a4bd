"""Product vector-quantisation codebooks (DESIGN §2) and the host-side assignment table.

A layer input of width ``f`` is cut into ``P = ceil(f / D)`` contiguous slices of width ``D``
(zero-padded at the end). Each slice ``p`` has ``k`` codewords and every node ``j`` an assignment
``r_p(j)``. A codeword carries a feature part (the mean layer input of its members, Eq. 6's X̃) and
one gradient part per out-of-batch convolution (the mean gradient of its members' aggregated
messages, Eq. 7's G̃). Both are kept as exponential-moving-average sums in the original scale;
standardisation (division by a running standard deviation) is used only inside the assignment
distance.
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


def _nearest(x: Tensor, codewords: Tensor) -> Tensor:
    """Nearest codeword per slice. x: (P, m, E), codewords: (P, k, E) -> (P, m) long."""
    P, m, _ = x.shape
    k = codewords.shape[1]
    c_sq = (codewords * codewords).sum(-1)  # (P, k)
    out = torch.empty(P, m, dtype=torch.long, device=x.device)
    step = max(1, _CHUNK.get(x.device.type, _CHUNK_DEFAULT) // max(1, P * k))
    for start in range(0, m, step):
        xs = x[:, start : start + step]  # (P, s, E)
        dist = torch.baddbmm(c_sq.unsqueeze(1), xs, codewords.transpose(1, 2), alpha=-2.0)
        out[:, start : start + step] = dist.argmin(dim=-1)
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
    codes = _nearest(x, centroids)
    for _ in range(n_iter):
        flat = (codes + rows[:, None] * k).reshape(-1)
        sums = torch.zeros(P * k, E, dtype=x.dtype, device=x.device)
        sums.index_add_(0, flat, x.reshape(P * m, E))
        cnt = torch.bincount(flat, minlength=P * k).to(x.dtype).unsqueeze(1)
        # empty clusters keep their previous centroid
        new = torch.where(cnt > 0, sums / cnt.clamp_min(1), centroids.reshape(P * k, E))
        centroids = new.reshape(P, k, E)
        codes = _nearest(x, centroids)
    return centroids, codes


class ProductCodebook(nn.Module):
    """Feature and gradient codewords of one layer, updated by EMA online k-means.

    Parameters
    ----------
    n_features : int
        Width ``f`` of the quantised layer input.
    n_codewords : int
        Codewords per slice, ``k``.
    codeword_dim : int
        Slice width ``D``.
    n_grad : int
        Number of gradient parts: one per convolution with out-of-batch messages.
    decay : float
        EMA decay ``γ``.
    grad_scale : float
        Weight of the standardised gradient in the assignment distance (0: features only).
    eps : float
        Laplace smoothing of the cluster sizes.
    n_aux : int
        Per-node scalars averaged like the gradients but left out of the distance (a learnable
        convolution's receiver-side quantities, see ``layers.attention_blue``). Each slice keeps
        its own average; a node's estimate is the mean over its slices' codewords.

    Buffers
    -------
    counts : (P, k)          EMA cluster sizes ``N``
    grad_counts : (P, k)     EMA counts of the members whose gradient is averaged (all members,
                             unless a ``grad_weight`` restricts them to nodes with a loss term)
    feature_sums : (P, k, D) EMA sums ``S`` of member features
    grad_sums : (n_grad, P, k, D) EMA sums of member gradients
    aux_sums : (n_aux, P, k) EMA sums of the members' auxiliary scalars
    feature_var : (P, D), grad_var : (n_grad, P, D) running variances for standardisation
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
        self.grad_scale = grad_scale
        self.eps = eps
        P, k, D = n_slices(n_features, codeword_dim), n_codewords, codeword_dim
        self.n_slices = P
        self.register_buffer("counts", torch.zeros(P, k))
        self.register_buffer("grad_counts", torch.zeros(P, k))
        self.register_buffer("feature_sums", torch.zeros(P, k, D))
        self.register_buffer("grad_sums", torch.zeros(n_grad, P, k, D))
        self.register_buffer("aux_sums", torch.zeros(n_aux, P, k))
        self.register_buffer("aux_mean", torch.zeros(n_aux))
        self.register_buffer("aux_var", torch.ones(n_aux))
        self.register_buffer("feature_mean", torch.zeros(P, D))
        self.register_buffer("feature_var", torch.ones(P, D))
        self.register_buffer("grad_mean", torch.zeros(n_grad, P, D))
        self.register_buffer("grad_var", torch.ones(n_grad, P, D))

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

    @property
    def codewords(self) -> Tensor:
        """Feature codewords X̃: (P, k, D)."""
        return self.feature_sums / self._sizes()

    def _grad_sizes(self) -> Tensor:
        return laplace_smoothing(self.grad_counts, self.eps).clamp_min(1e-12)  # (P, k)

    @property
    def grad_codewords(self) -> Tensor:
        """Gradient codewords G̃: (n_grad, P, k, D)."""
        return self.grad_sums / self._grad_sizes().unsqueeze(-1).unsqueeze(0)

    @property
    def aux_codewords(self) -> Tensor:
        """Per-slice averages of the auxiliary scalars: (n_aux, P, k)."""
        return self.aux_sums / self._grad_sizes().unsqueeze(0)

    def lookup(self, codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Reconstructions of nodes with ``codes`` (m, P): features (m, f), gradients
        (n_grad, m, f) and auxiliary scalars (n_aux, m), the mean over slices."""
        slices = torch.arange(self.n_slices, device=codes.device)
        x = self.merge(self.codewords[slices, codes])
        g = self.merge(self.grad_codewords[:, slices, codes])
        aux = self.aux_codewords[:, slices, codes].mean(-1)
        return x, g, aux

    # -- assignment ----------------------------------------------------------------------------
    def _standardised(
        self, x: Tensor, g: Tensor | None, aux: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Assignment space: data (P, m, E) and codewords (P, k, E), E = D (+ n_grad·D + n_aux)."""
        inv_x = self.feature_var.clamp_min(1e-20).rsqrt()  # (P, D)
        data = [(x * inv_x).transpose(0, 1)]  # (P, m, D)
        cw = [self.codewords * inv_x.unsqueeze(1)]
        if g is not None and self.grad_scale > 0:
            inv_g = self.grad_var.clamp_min(1e-20).rsqrt() * self.grad_scale  # (S, P, D)
            gs = g * inv_g.unsqueeze(1)  # (S, m, P, D)
            data.append(gs.permute(2, 1, 0, 3).reshape(self.n_slices, x.shape[0], -1))
            gc = self.grad_codewords * inv_g.unsqueeze(2)  # (S, P, k, D)
            cw.append(gc.permute(1, 2, 0, 3).reshape(self.n_slices, self.n_codewords, -1))
            if aux is not None and self.n_aux:
                inv_a = self.aux_var.clamp_min(1e-20).rsqrt() * self.grad_scale  # (n_aux,)
                a = (aux * inv_a[:, None]).T  # (m, n_aux)
                data.append(a.unsqueeze(0).expand(self.n_slices, -1, -1))
                cw.append((self.aux_codewords * inv_a[:, None, None]).permute(1, 2, 0))
        return torch.cat(data, -1), torch.cat(cw, -1)

    @torch.no_grad()
    def assign(self, x: Tensor, g: Tensor | None = None, aux: Tensor | None = None) -> Tensor:
        """Nearest codeword per slice for rows ``x`` (m, P, D), gradients ``g`` (S, m, P, D) and
        auxiliary scalars ``aux`` (n_aux, m), which every slice's distance includes.

        Returns codes of shape (m, P). With ``g=None`` the distance uses features only.
        """
        data, cw = self._standardised(x, g, aux)
        return _nearest(data, cw).T.contiguous()

    # -- updates -------------------------------------------------------------------------------
    @torch.no_grad()
    def update(
        self,
        x: Tensor,
        g: Tensor,
        codes: Tensor,
        grad_weight: Tensor | None = None,
        aux: Tensor | None = None,
    ) -> None:
        """One EMA step of online k-means: batch rows x (b, P, D), g (S, b, P, D), codes (b, P).

        ``grad_weight`` (b,) in {0, 1} restricts the gradient codewords (and the auxiliary
        scalars ``aux``, (n_aux, b)) to the marked rows, the nodes whose gradient is not known to
        be zero; by default every row counts.
        """
        b, P, D = x.shape
        k = self.n_codewords
        flat = (codes + torch.arange(P, device=codes.device) * k).reshape(-1)  # (b·P,)
        count = torch.bincount(flat, minlength=P * k).to(x.dtype).reshape(P, k)
        fsum = torch.zeros(P * k, D, dtype=x.dtype, device=x.device)
        fsum.index_add_(0, flat, x.reshape(b * P, D))
        if grad_weight is None:
            gcount = count
        else:
            w = grad_weight.to(x.dtype).repeat_interleave(P)  # (b·P,)
            gcount = torch.bincount(flat, weights=w, minlength=P * k).to(x.dtype).reshape(P, k)
            g = g * grad_weight.to(x.dtype)[None, :, None, None]
            if aux is not None:
                aux = aux * grad_weight.to(x.dtype)
        if self.n_aux:
            asum = torch.zeros(self.n_aux, P * k, dtype=x.dtype, device=x.device)
            asum.index_add_(1, flat, aux.repeat_interleave(P, dim=1))
            ema_inplace(self.aux_sums, asum.reshape(self.n_aux, P, k), self.decay)
            self._update_moments(self.aux_mean, self.aux_var, aux, dim=1)
        gsum = torch.zeros(self.n_grad, P * k, D, dtype=x.dtype, device=x.device)
        gsum.index_add_(1, flat, g.reshape(self.n_grad, b * P, D))
        ema_inplace(self.counts, count, self.decay)
        ema_inplace(self.feature_sums, fsum.reshape(P, k, D), self.decay)
        ema_inplace(self.grad_counts, gcount, self.decay)
        ema_inplace(self.grad_sums, gsum.reshape(self.n_grad, P, k, D), self.decay)
        self._update_moments(self.feature_mean, self.feature_var, x, dim=0)
        self._update_moments(self.grad_mean, self.grad_var, g, dim=1)

    def _update_moments(self, mean: Tensor, var: Tensor, v: Tensor, dim: int) -> None:
        if v.shape[dim] < 2:
            return
        ema_inplace(mean, v.mean(dim), self.decay)
        ema_inplace(var, v.var(dim), self.decay)

    @torch.no_grad()
    def initialise(
        self, x: Tensor, sample: Tensor, weight: float, generator: torch.Generator, n_iter: int
    ) -> Tensor:
        """Set the codebook from k-means over all nodes' features (gradient parts zero).

        x : (n, P, D) every node's layer input; sample : (m, P, D) rows k-means is fitted on;
        weight scales counts and sums to the size of one batch so that EMA updates blend in.
        Returns every node's codes (n, P).
        """
        n, P, D = x.shape
        k = self.n_codewords
        self.feature_mean.copy_(x.mean(0))
        self.feature_var.copy_(x.var(0) if n > 1 else torch.ones_like(self.feature_var))
        inv = self.feature_var.clamp_min(1e-20).rsqrt()  # (P, D)
        centroids, _ = kmeans((sample * inv).transpose(0, 1), k, n_iter, generator)  # (P, k, D)
        codes = _nearest((x * inv).transpose(0, 1), centroids).T.contiguous()  # (n, P)
        centroids = centroids / inv.unsqueeze(1)
        flat = (codes + torch.arange(P, device=codes.device) * k).reshape(-1)
        count = torch.bincount(flat, minlength=P * k).to(x.dtype).reshape(P, k)
        fsum = torch.zeros(P * k, D, dtype=x.dtype, device=x.device)
        fsum.index_add_(0, flat, x.reshape(n * P, D))
        fsum = fsum.reshape(P, k, D)
        # codewords no node chose keep their k-means centroid with a token mass
        empty = count == 0
        fsum[empty] = centroids[empty] * self.eps
        count[empty] = self.eps
        self.counts.copy_(count * weight)
        self.grad_counts.zero_()
        self.feature_sums.copy_(fsum * weight)
        self.grad_sums.zero_()
        self.aux_sums.zero_()
        self.aux_mean.zero_()
        self.aux_var.fill_(1.0)
        self.grad_mean.zero_()
        self.grad_var.fill_(1.0)
        return codes

    @torch.no_grad()
    def reseed(
        self,
        dead: Tensor,
        x: Tensor,
        g: Tensor,
        generator: torch.Generator,
        aux: Tensor | None = None,
    ) -> int:
        """Re-seed codewords no node is assigned to from random rows of the current batch.

        dead : (P, k) bool; x : (b, P, D); g : (S, b, P, D); aux : (n_aux, b).
        Returns how many were re-seeded.
        """
        slice_idx, word_idx = torch.nonzero(dead, as_tuple=True)
        n_dead = int(slice_idx.numel())
        if n_dead == 0 or x.shape[0] == 0:
            return 0
        rows = torch.randint(x.shape[0], (n_dead,), generator=generator).to(x.device)
        mass = 1.0 - self.decay
        self.counts[slice_idx, word_idx] = mass
        self.grad_counts[slice_idx, word_idx] = mass
        self.feature_sums[slice_idx, word_idx] = x[rows, slice_idx] * mass
        self.grad_sums[:, slice_idx, word_idx] = g[:, rows, slice_idx] * mass
        if self.n_aux:
            self.aux_sums[:, slice_idx, word_idx] = aux[:, rows] * mass
        return n_dead


class AssignmentTable:
    """Host-side assignments ``r_p(j)`` of every node for one layer, with usage counts.

    Parameters
    ----------
    n_nodes, n_slices, n_codewords : int

    Attributes
    ----------
    codes : ndarray of shape (n_nodes, n_slices), the smallest integer type that holds k
    usage : ndarray of shape (n_slices, n_codewords), nodes assigned to each codeword
    """

    def __init__(self, n_nodes: int, n_slices: int, n_codewords: int):
        self.n_codewords = n_codewords
        self.codes = np.zeros((n_nodes, n_slices), dtype=np.min_scalar_type(n_codewords - 1))
        self.usage = np.zeros((n_slices, n_codewords), dtype=np.int64)
        self.usage[:, 0] = n_nodes

    def _flat(self, codes: np.ndarray) -> np.ndarray:
        offsets = np.arange(codes.shape[1], dtype=np.int64) * self.n_codewords
        return (codes.astype(np.int64) + offsets).ravel()

    def set(self, nodes: np.ndarray, codes: np.ndarray) -> int:
        """Assign ``nodes`` to ``codes`` (len(nodes), P); returns how many entries changed."""
        old = self.codes[nodes]
        size = self.usage.size
        self.usage -= np.bincount(self._flat(old), minlength=size).reshape(self.usage.shape)
        self.usage += np.bincount(self._flat(codes), minlength=size).reshape(self.usage.shape)
        changed = int(np.count_nonzero(old != codes))
        self.codes[nodes] = codes
        return changed

    def unused(self) -> np.ndarray:
        """(P, k) bool: codewords no node is assigned to."""
        return self.usage == 0
