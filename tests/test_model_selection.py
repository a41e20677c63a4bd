import numpy as np
import pytest
import scipy.sparse as sp

from skvqgnn.model_selection import EdgeSplit, edge_split


def undirected_graph(n: int = 60, seed: int = 0) -> sp.csr_array:
    """Random weighted symmetric adjacency with self-loops on every fifth node."""
    R = sp.random(n, n, density=0.06, random_state=seed, format="csr")
    A = sp.lil_array(R + R.T)
    A.setdiag(np.where(np.arange(n) % 5 == 0, 2.5, 0.0))
    return sp.csr_array(A)


def directed_graph(n: int = 50, seed: int = 1) -> sp.csr_array:
    """Random weighted non-symmetric adjacency with some reciprocal edges and self-loops."""
    A = sp.lil_array(sp.random(n, n, density=0.08, random_state=seed))
    A[0, 1], A[1, 0] = 1.0, 3.0  # a reciprocal pair with different weights
    A.setdiag(np.where(np.arange(n) % 7 == 0, 0.5, 0.0))
    return sp.csr_array(A)


def candidate_edges(A: sp.csr_array, undirected: bool) -> set[tuple[int, int]]:
    rows, cols = A.nonzero()
    keep = rows < cols if undirected else rows != cols
    return set(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, pairs.tolist()))


GRAPHS = [(undirected_graph(), True), (directed_graph(), False)]


@pytest.mark.parametrize(("A", "undirected"), GRAPHS)
def test_sizes_follow_rounding(A, undirected):
    m = len(candidate_edges(A, undirected))
    train, val, test = edge_split(A, val=0.13, test=0.21, negative_ratio=1.5, random_state=0)
    n_val, n_test = round(0.13 * m), round(0.21 * m)
    assert len(val.positives) == n_val
    assert len(test.positives) == n_test
    assert len(train.positives) == m - n_val - n_test
    for split in (train, val, test):
        assert isinstance(split, EdgeSplit)
        n_pos = len(split.positives)
        assert len(split.negatives) == round(1.5 * n_pos)
        assert len(split) == n_pos + round(1.5 * n_pos)
        assert split.pairs.dtype == np.int64 and split.pairs.shape == (len(split), 2)
        assert split.targets.dtype == np.int64
        # positives first, then negatives
        np.testing.assert_array_equal(split.targets, np.repeat([1, 0], [n_pos, len(split) - n_pos]))


@pytest.mark.parametrize(("A", "undirected"), GRAPHS)
def test_training_graph_is_A_without_held_out_edges(A, undirected):
    train, val, test = edge_split(A, val=0.1, test=0.2, random_state=3)
    adjacency = train.adjacency
    assert val.adjacency is adjacency and test.adjacency is adjacency
    assert isinstance(adjacency, sp.csr_array) and adjacency.dtype == np.float32

    expected = A.toarray().astype(np.float32)
    held = np.concatenate([val.positives, test.positives])
    expected[held[:, 0], held[:, 1]] = 0
    if undirected:
        expected[held[:, 1], held[:, 0]] = 0
    np.testing.assert_array_equal(adjacency.toarray(), expected)
    # held-out edges are gone (both directions if undirected), self-loops and weights stay
    dense = adjacency.toarray()
    assert np.all(dense[held[:, 0], held[:, 1]] == 0)
    if undirected:
        assert np.all(dense[held[:, 1], held[:, 0]] == 0)
    np.testing.assert_array_equal(dense.diagonal(), A.diagonal().astype(np.float32))
    assert np.all(dense[train.positives[:, 0], train.positives[:, 1]] > 0)


@pytest.mark.parametrize(("A", "undirected"), GRAPHS)
def test_positives_partition_the_candidate_edges(A, undirected):
    splits = edge_split(A, val=0.1, test=0.2, random_state=1)
    sets = [as_set(s.positives) for s in splits]
    assert sum(len(s) for s in sets) == sum(len(s.positives) for s in splits)  # no repeats
    assert set.union(*sets) == candidate_edges(A, undirected)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


@pytest.mark.parametrize(("A", "undirected"), GRAPHS)
def test_negatives_are_distinct_non_edges(A, undirected):
    splits = edge_split(A, val=0.1, test=0.2, negative_ratio=2.0, random_state=2)
    negatives = np.concatenate([s.negatives for s in splits])
    u, v = negatives[:, 0], negatives[:, 1]
    dense = A.toarray()
    assert np.all(u != v)
    assert np.all(dense[u, v] == 0)
    if undirected:
        assert np.all(u < v)
        assert np.all(dense[v, u] == 0)
    # no duplicates, within or across the three splits
    assert len(as_set(negatives)) == len(negatives)


def test_directed_negatives_may_be_reverse_of_an_edge():
    # A path 0 -> 1 -> 2 -> 3 as A[u, v] != 0 pairs: every non-edge must be drawn at some seed.
    A = sp.csr_array(sp.eye(4, k=1))
    seen = set()
    for seed in range(40):
        splits = edge_split(A, val=0.0, test=0.0, negative_ratio=1.0, random_state=seed)
        seen |= as_set(splits[0].negatives)
    assert seen == {(u, v) for u in range(4) for v in range(4) if u != v and v != u + 1}
    assert (1, 0) in seen


def test_negatives_and_held_out_edges_are_uniform():
    # Ring of 8 nodes: 8 edges, 20 non-edges; 2 val, 2 test, 4 train edges, 8 negatives.
    A = sp.eye(8, k=1) + sp.eye(8, k=-7)
    A = A + A.T
    n_seeds = 300
    neg_count = np.zeros((8, 8))
    val_count = np.zeros((8, 8))
    for seed in range(n_seeds):
        train, val, test = edge_split(A, val=0.25, test=0.25, random_state=seed)
        for split in (train, val, test):
            np.add.at(neg_count, tuple(split.negatives.T), 1)
        np.add.at(val_count, tuple(val.positives.T), 1)
    non_edges = np.triu(A.toarray() == 0, k=1)
    np.testing.assert_allclose(neg_count[non_edges] / n_seeds, 8 / 20, atol=0.1)
    assert neg_count[~non_edges].sum() == 0
    edges = np.triu(A.toarray() > 0, k=1)
    np.testing.assert_allclose(val_count[edges] / n_seeds, 2 / 8, atol=0.1)


def test_reproducible_with_random_state():
    A = undirected_graph()
    first = edge_split(A, random_state=7)
    again = edge_split(A, random_state=np.random.RandomState(7))
    other = edge_split(A, random_state=8)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.pairs, b.pairs)
        np.testing.assert_array_equal(a.targets, b.targets)
    assert (first[0].adjacency != again[0].adjacency).nnz == 0
    assert not np.array_equal(first[1].pairs, other[1].pairs)


def test_dense_array_input_matches_sparse():
    A = directed_graph()
    from_sparse = edge_split(A, random_state=4)
    from_dense = edge_split(A.toarray(), random_state=4)
    for a, b in zip(from_sparse, from_dense, strict=True):
        np.testing.assert_array_equal(a.pairs, b.pairs)


def test_undirected_detection():
    A = undirected_graph()
    m = len(candidate_edges(A, undirected=True))
    train, val, test = edge_split(A, val=0.0, test=0.0, random_state=0)
    assert len(train.positives) == m  # one pair u < v per undirected edge
    assert np.all(train.negatives[:, 0] < train.negatives[:, 1])

    # Same pattern, different weights: not symmetric, so directed.
    B = A.tolil()
    B[0, A[[0]].nonzero()[1][-1]] = 9.0
    (train_b, *_) = edge_split(B, val=0.0, test=0.0, random_state=0)
    assert len(train_b.positives) == 2 * m

    # undirected=False on a symmetric graph removes only the held-out direction.
    (_, val_d, _) = edge_split(A, val=0.2, test=0.0, undirected=False, random_state=0)
    u, v = val_d.positives.T
    dense = val_d.adjacency.toarray()
    assert np.all(dense[u, v] == 0)
    reverse_held = as_set(val_d.positives[:, ::-1]) & as_set(val_d.positives)
    keep = np.array([(b, a) not in reverse_held for a, b in zip(u, v, strict=True)])
    original = A.toarray().astype(np.float32)
    np.testing.assert_array_equal(dense[v[keep], u[keep]], original[v[keep], u[keep]])
    assert keep.sum() > 0

    with pytest.raises(ValueError, match="undirected=True but A is not symmetric"):
        edge_split(directed_graph(), undirected=True)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"val": -0.1}, "val must be a fraction"),
        ({"val": 1.0}, "val must be a fraction"),
        ({"val": float("nan")}, "val must be a fraction"),
        ({"val": True}, "val must be a fraction"),
        ({"val": "0.1"}, "val must be a fraction"),
        ({"test": 1.5}, "test must be a fraction"),
        ({"test": -1}, "test must be a fraction"),
        ({"val": 0.5, "test": 0.5}, r"val \+ test must be < 1"),
        ({"negative_ratio": -0.5}, "negative_ratio must be"),
        ({"negative_ratio": float("inf")}, "negative_ratio must be"),
        ({"negative_ratio": None}, "negative_ratio must be"),
        ({"undirected": "yes"}, "undirected must be True, False or None"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        edge_split(undirected_graph(), **kwargs)


def test_bad_adjacency():
    with pytest.raises(ValueError, match="square"):
        edge_split(np.ones((3, 4)))


def test_dense_graphs():
    # Complete graph on 6 nodes without 3 edges: 12 edges, exactly 3 non-edges.
    A = np.ones((6, 6)) - np.eye(6)
    missing = [(0, 1), (2, 4), (3, 5)]
    for u, v in missing:
        A[u, v] = A[v, u] = 0
    with pytest.raises(ValueError, match="too dense.*12 negative pairs.*only 3"):
        edge_split(A, val=0.25, test=0.25, random_state=0)
    # 6 train, 3 val, 3 test positives; round(0.2 * 6) + 2 * round(0.2 * 3) = 3 negatives: all.
    splits = edge_split(A, val=0.25, test=0.25, negative_ratio=0.2, random_state=0)
    assert [len(s.negatives) for s in splits] == [1, 1, 1]
    assert set.union(*(as_set(s.negatives) for s in splits)) == set(missing)

    # Directed complete graph on 5 nodes without 2 edges: 18 edges, 2 non-edges.
    B = np.ones((5, 5)) - np.eye(5)
    B[0, 1] = B[3, 2] = 0
    (train, *_) = edge_split(B, val=0.0, test=0.0, negative_ratio=2 / 18, random_state=0)
    assert as_set(train.negatives) == {(0, 1), (3, 2)}
