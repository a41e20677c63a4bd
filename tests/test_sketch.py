from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from skvqgnn.sketch import (
    codeword_sketch,
    gather_rows,
    group_by_codes,
    sketch_product,
    split_batch_edges,
)

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
                assert np.isclose(S[p * len(batch) + i, p * k + v], dense[node, senders].sum())
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


def test_sketch_does_not_depend_on_the_order_of_out_of_batch_entries():
    C, batch, position = _setup()
    n, P, k = C.shape[0], 3, 2
    codes = np.random.default_rng(3).integers(0, k, size=(n, P))
    edges = split_batch_edges(C, batch, position)
    order = np.random.default_rng(0).permutation(len(edges.out_rows))
    shuffled = replace(
        edges,
        out_rows=edges.out_rows[order],
        out_nodes=edges.out_nodes[order],
        out_vals=edges.out_vals[order],
    )
    assert np.any(np.diff(shuffled.out_rows) < 0)
    np.testing.assert_allclose(
        codeword_sketch(shuffled, codes, k).toarray(),
        codeword_sketch(edges, codes, k).toarray(),
        rtol=1e-6,
    )


def test_torch_sketch_product_sums_duplicate_entries():
    # 8 codewords and about 6 out-of-batch neighbours per row: some rows hold a column twice
    C, batch, position = _setup()
    n, P, k, D = C.shape[0], 2, 8, 3
    codes = np.random.default_rng(4).integers(0, k, size=(n, P))
    S = codeword_sketch(split_batch_edges(C, batch, position), codes, k)
    S_canonical = S.to_scipy()
    S_canonical.sum_duplicates()
    assert S_canonical.nnz < S.nnz  # the test exercises duplicates
    words = np.random.default_rng(5).standard_normal((P * k, D)).astype(np.float32)
    out = sketch_product(S, torch.from_numpy(words)).numpy()
    np.testing.assert_allclose(out, S.toarray() @ words, rtol=1e-5, atol=1e-6)


def test_intra_tensor_is_C_in_for_sorted_and_unsorted_batches():
    C, _, _ = _setup()
    n = C.shape[0]
    unsorted = np.random.default_rng(6).permutation(n)[:15]
    for nodes in (np.sort(unsorted), unsorted):
        position = np.full(n, -1)
        position[nodes] = np.arange(len(nodes))
        edges = split_batch_edges(C, nodes, position)
        T = edges.intra_tensor(torch.device("cpu"))
        assert T.is_coalesced()
        # a coalesced COO tensor must have its indices sorted (row, column) and unique
        keys = (T.indices()[0] * len(nodes) + T.indices()[1]).numpy()
        assert np.all(np.diff(keys) > 0)
        np.testing.assert_array_equal(T.to_dense().numpy(), C.toarray()[np.ix_(nodes, nodes)])


def test_sketch_never_holds_more_than_P_b_k_entries():
    # k = 1: every out-of-batch sender of a row shares the row's only codeword per slice
    C, batch, position = _setup()
    n, P, k = C.shape[0], 3, 1
    codes = np.zeros((n, P), dtype=np.int64)
    edges = split_batch_edges(C, batch, position)
    assert len(edges.out_rows) > len(batch) * k
    S = codeword_sketch(edges, codes, k)
    assert S.nnz <= P * len(batch) * k
    dense = C.toarray()
    outside = np.setdiff1d(np.arange(n), batch)
    expected = np.tile(dense[np.ix_(batch, outside)].sum(1), P)
    np.testing.assert_allclose(S.toarray().sum(1), expected, rtol=1e-5)


def test_sketch_product_rejects_codewords_of_another_shape():
    C, batch, position = _setup()
    codes = np.zeros((C.shape[0], 2), dtype=np.int64)
    bags = codeword_sketch(split_batch_edges(C, batch, position), codes, 3)
    with pytest.raises(ValueError, match="6 columns times 5 codewords"):
        sketch_product(bags, torch.zeros(5, 4))


def test_dropout_zeroes_a_share_p_and_keeps_the_expectation():
    from skvqgnn.sketch import dropout

    torch.manual_seed(0)
    x = torch.full((400, 250), 2.0, requires_grad=True)
    y = dropout(x, 0.3, True)
    zero = y == 0
    assert abs(float(zero.float().mean()) - 0.3) < 0.01
    assert torch.allclose(y[~zero], torch.tensor(2.0 / 0.7))
    y.sum().backward()  # the gradient flows through the kept values only, scaled alike
    assert torch.equal(x.grad == 0, zero)
    assert torch.allclose(x.grad[~zero], torch.tensor(1 / 0.7))
    assert dropout(x, 0.3, False) is x and dropout(x, 0.0, True) is x
    torch.manual_seed(1)
    first = dropout(x, 0.5, True)
    torch.manual_seed(1)
    assert torch.equal(first, dropout(x, 0.5, True))  # torch's global generator decides


@pytest.mark.parametrize("P", [1, 2])
@pytest.mark.parametrize("n_rows", [3, 2000])  # few rows: dense counts; many: sorted pairs
def test_group_by_codes_merges_entries_of_a_row_with_the_same_codes(P, n_rows):
    rng = np.random.default_rng(P)
    n, k, E = 50, 6, 300
    codes = rng.integers(0, k, size=(n, P)).astype(np.uint8)
    rows = np.sort(rng.integers(0, n_rows, size=E))
    nodes = rng.integers(0, n, size=E)
    out_rows, groups, counts, group_codes = group_by_codes(rows, nodes, codes)
    expected: dict = {}
    for r, j in zip(rows, nodes, strict=True):
        key = (int(r), tuple(codes[j]))
        expected[key] = expected.get(key, 0) + 1
    got = {
        (int(r), tuple(group_codes[g])): int(c)
        for r, g, c in zip(out_rows, groups, counts, strict=True)
    }
    assert got == expected
    assert len(got) == len(out_rows)  # each (row, group) pair once
    assert len({tuple(c) for c in group_codes}) == len(group_codes)  # groups are distinct codes
    assert group_codes.dtype == codes.dtype and group_codes.shape[1] == P
