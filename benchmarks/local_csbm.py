"""A contextual SBM graph written to disk a block of nodes at a time, with its node ids in an
order that keeps most edges short: the graph for runs larger than memory.

``make_csbm`` builds its graph in memory (a peak of 4.7 GiB at 10⁷ nodes, growing with n) and
numbers its nodes at random, so that a batch's rows of features are scattered over the whole
feature matrix. Graphs that do not fit in memory are stored in some locality-preserving order
(a crawl, a BFS, a partition), and a fit that reads its features from disk depends on it: a
row read at random from a cold memory map costs about 0.1 ms here (the kernel reads 128 KiB
around it), so an epoch over 10⁸ nodes in random order would spend hours in page faults.

:func:`write_local_csbm` writes such a graph: a symmetric 0/1 adjacency in CSR (``indptr``,
``indices``, ``data`` as raw files) and the float32 features as a ``.npy`` file, plus int8
labels and an int8 split (0 train, 1 validation, 2 test), all in a folder, all opened
memory-mapped. Node ``i`` has class ``i mod n_classes``, features ``mean[class] + noise``, and
edges drawn as in ``make_csbm`` (a node of the same class with probability ``homophily``,
otherwise of another class), of two kinds: a fraction ``1 - long_range`` joins a node to one at
most ``window`` ids further, the rest join uniformly random nodes (self-loops dropped, repeated
edges merged). Each block's edges and rows come from seeds of their own (the graph is a
function of the seed and the block size), so generating it needs memory for one block's edges
at a time.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def _local_edges(
    seed: int,
    lo: int,
    hi: int,
    n: int,
    n_classes: int,
    avg_degree: float,
    homophily: float,
    window: int,
    long_range: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The short edges ``(u, v)``, ``u`` in ``[lo, hi)``, ``u < v <= u + window``, ``v < n``."""
    rng = np.random.default_rng([seed, 0, lo])
    m = round((hi - lo) * avg_degree / 2 * (1 - long_range))
    u = rng.integers(lo, hi, size=m)
    shift = _class_shift(rng, m, n_classes, homophily)  # (class of v - class of u) mod C
    offset = n_classes * rng.integers(0, max(1, window // n_classes), size=m) + shift
    offset[offset == 0] = n_classes  # a node of its own class, not itself
    v = u + offset
    keep = v < n
    return u[keep], v[keep]


def _class_shift(rng: Any, m: int, n_classes: int, homophily: float) -> np.ndarray:
    shift = np.zeros(m, dtype=np.int64)
    if n_classes > 1:
        other = rng.random(m) >= homophily
        shift[other] = rng.integers(1, n_classes, size=int(other.sum()))
    return shift


def _long_edges(
    seed: int,
    a: tuple[int, int],
    b: tuple[int, int],
    count: int,
    n_classes: int,
    homophily: float,
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` edges ``(u, v)``, ``u`` uniform in block ``a``, ``v`` in block ``b`` of the
    class the homophily draw gives."""
    rng = np.random.default_rng([seed, 1, a[0], b[0]])
    u = rng.integers(a[0], a[1], size=count)
    target = (u + _class_shift(rng, count, n_classes, homophily)) % n_classes
    first = b[0] + (target - b[0]) % n_classes  # the block's first node of that class
    slots = (b[1] - first + n_classes - 1) // n_classes
    v = first + n_classes * (rng.random(count) * slots).astype(np.int64)
    keep = slots > 0
    return u[keep], v[keep]


def write_local_csbm(
    folder: str,
    n_nodes: int,
    n_classes: int = 5,
    avg_degree: float = 10.0,
    homophily: float = 0.8,
    n_features: int = 64,
    feature_noise: float = 1.0,
    window: int = 1000,
    long_range: float = 0.1,
    block: int = 1 << 20,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the graph to ``folder`` and return it opened memory-mapped.

    Returns
    -------
    dict
        ``A`` (a ``scipy.sparse.csr_array`` over the mapped files: int32 indices and row
        pointers while the entries fit, float32 ones), ``X`` (n_nodes, n_features) float32, ``y``
        and ``split`` (n_nodes,) int8.
    """
    if window > block:
        raise ValueError(f"window must be at most block={block}, got {window}")
    os.makedirs(folder, exist_ok=True)
    n = int(n_nodes)
    bounds = [(lo, min(lo + block, n)) for lo in range(0, n, block)]
    n_long = n * avg_degree / 2 * long_range
    pairs = n * n / 2  # pairs of nodes, over which the long edges spread evenly
    # every entry a block's rows can get, before repeated edges are merged: the index width
    bound = 2 * (round(n * avg_degree / 2) + len(bounds) ** 2 + len(bounds))
    ids = np.int32 if max(bound, n) <= np.iinfo(np.int32).max else np.int64
    means = np.random.default_rng([seed, 4]).standard_normal((n_classes, n_features))
    means = (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)
    X = np.lib.format.open_memmap(
        os.path.join(folder, "X.npy"), mode="w+", dtype=np.float32, shape=(n, n_features)
    )
    y = np.memmap(os.path.join(folder, "y"), dtype=np.int8, mode="w+", shape=(n,))
    split = np.memmap(os.path.join(folder, "split"), dtype=np.int8, mode="w+", shape=(n,))
    indptr = np.memmap(os.path.join(folder, "indptr"), dtype=ids, mode="w+", shape=(n + 1,))
    indptr[0] = 0
    nnz = 0
    args = (n, n_classes, avg_degree, homophily, window, long_range)
    previous = (np.empty(0, np.int64), np.empty(0, np.int64))
    with (
        open(os.path.join(folder, "indices"), "wb") as indices,
        open(os.path.join(folder, "data"), "wb") as data,
    ):
        for i, (lo, hi) in enumerate(bounds):
            u, v = _local_edges(seed, lo, hi, *args)
            rows = [u, v[v < hi], previous[1][previous[1] >= lo]]
            cols = [v, u[v < hi], previous[0][previous[1] >= lo]]
            previous = (u, v)
            for j in range(len(bounds)):  # long edges with every block, this one included
                a, b = sorted((i, j))
                size = (bounds[a][1] - bounds[a][0]) * (bounds[b][1] - bounds[b][0])
                count = round(n_long * size / (2 if a == b else 1) / pairs)
                s, t = _long_edges(seed, bounds[a], bounds[b], count, n_classes, homophily)
                if a == b:
                    s, t = np.concatenate([s, t]), np.concatenate([t, s])
                rows.append(s if a == i else t)
                cols.append(t if a == i else s)
            row, col = np.concatenate(rows), np.concatenate(cols)
            key = (row[row != col] - lo) * n + col[row != col]
            del row, col
            key.sort()
            row, col = np.divmod(key[np.r_[True, key[1:] != key[:-1]]], n)
            del key
            counts = np.bincount(row, minlength=hi - lo)
            indptr[lo + 1 : hi + 1] = nnz + np.cumsum(counts)
            nnz += len(col)
            indices.write(col.astype(ids).tobytes())
            data.write(np.ones(len(col), dtype=np.float32).tobytes())
            rng = np.random.default_rng([seed, 2, lo])
            y[lo:hi] = (np.arange(lo, hi) % n_classes).astype(np.int8)
            draw = rng.random(hi - lo)
            split[lo:hi] = (draw >= 0.6).astype(np.int8) + (draw >= 0.8)
            rows_x = rng.standard_normal((hi - lo, n_features), dtype=np.float32)
            rows_x *= np.float32(feature_noise)
            rows_x += means[y[lo:hi]]
            X[lo:hi] = rows_x
    for mapped in (X, y, split, indptr):
        mapped.flush()
    del X, y, split, indptr
    return open_local_csbm(folder, n, nnz, ids)


def open_local_csbm(folder: str, n: int, nnz: int, ids: Any) -> dict[str, Any]:
    """The graph in ``folder`` opened memory-mapped (see :func:`write_local_csbm`)."""
    import scipy.sparse as sp

    def mapped(name: str, dtype: Any, size: int) -> np.memmap:
        return np.memmap(os.path.join(folder, name), dtype=dtype, mode="r", shape=(size,))

    A = sp.csr_array(
        (
            mapped("data", np.float32, nnz),
            mapped("indices", ids, nnz),
            mapped("indptr", ids, n + 1),
        ),
        shape=(n, n),
        copy=False,
    )
    return {
        "A": A,
        "X": np.load(os.path.join(folder, "X.npy"), mmap_mode="r"),
        "y": mapped("y", np.int8, n),
        "split": mapped("split", np.int8, n),
    }


def drop_from_page_cache(folder: str) -> None:
    """Write the folder's files back and drop their pages from the page cache, so that a run
    starts with its data on disk only."""
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
