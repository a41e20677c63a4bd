import numpy as np
import scipy.sparse as sp

from skvqgnn.sketch import codeword_sketch, gather_rows, split_batch_edges

from .conftest import random_graph


def test_gather_rows_matches_scipy():
    C = random_graph(30, 4, seed=0).astype(np.float32)
    C.data = np.random.default_rng(0).random(C.nnz).astype(np.float32)
    rows = np.array([3, 0, 17, 29])
    local, cols, vals = gather_rows(C, rows)
    rebuilt = sp.csr_array((vals, (local, cols)), shape=(4, 30)).toarray()
    np.testing.assert_array_equal(rebuilt, C.toarray()[rows])


def _setup(n=25, seed=1):
    C = random_graph(n, 6, seed=seed, symmetric=False).astype(np.float32)
    C.data = np.random.default_rng(seed).random(C.nnz).astype(np.float32)
    batch = np.array([1, 4, 5, 9, 20])
    position = np.full(n, -1)
    position[batch] = np.arange(len(batch))
    return C, batch, position


def test_intra_batch_messages_carry_exactly_C():
    C, batch, position = _setup()
    edges = split_batch_edges(C, batch, position)
    np.testing.assert_array_equal(edges.intra().toarray(), C.toarray()[np.ix_(batch, batch)])
    # every out-of-batch entry is really out of the batch
    assert not np.isin(edges.out_nodes, batch).any()
    assert len(edges.in_vals) + len(edges.out_vals) == C[batch].nnz


def test_codeword_sketch_sums_out_of_batch_weights_per_codeword():
    C, batch, position = _setup()
    n, P, k = C.shape[0], 2, 3
    codes = np.random.default_rng(0).integers(0, k, size=(n, P))
    S = codeword_sketch(split_batch_edges(C, batch, position), codes, k).toarray()
    assert S.shape == (len(batch) * P, P * k)
    dense = C.toarray()
    outside = np.setdiff1d(np.arange(n), batch)
    for i, node in enumerate(batch):
        for p in range(P):
            for v in range(k):
                senders = outside[codes[outside, p] == v]
                assert np.isclose(S[i * P + p, p * k + v], dense[node, senders].sum())
    # in-batch neighbours never enter the sketch (no double counting)
    total_out = sum(dense[np.ix_(batch, outside)].sum(1))
    assert np.isclose(S.sum() / P, total_out)


def test_transposed_sketch_uses_receivers():
    C, batch, position = _setup()
    n, P, k = C.shape[0], 1, 4
    codes = np.random.default_rng(2).integers(0, k, size=(n, P))
    T = codeword_sketch(split_batch_edges(C.T.tocsr(), batch, position), codes, k).toarray()
    dense = C.toarray()
    outside = np.setdiff1d(np.arange(n), batch)
    for j, node in enumerate(batch):
        for v in range(k):
            receivers = outside[codes[outside, 0] == v]
            assert np.isclose(T[j, v], dense[receivers, node].sum())
