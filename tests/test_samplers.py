import numpy as np
import pytest
import scipy.sparse as sp

from skvqgnn.datasets import make_csbm
from skvqgnn.samplers import (
    ClusterSampler,
    RandomNodeSampler,
    contiguous_partition,
    label_propagation_partition,
    metis_partition,
)

from .conftest import random_graph


def _cover(batches, n):
    allnodes = np.concatenate(list(batches))
    return len(allnodes) == n and np.array_equal(np.sort(allnodes), np.arange(n))


def _intra_fraction(A, batches):
    inside = 0
    for b in batches:
        inside += A[b][:, b].nnz
    return inside / A.nnz


def test_random_sampler_partitions_nodes_each_epoch():
    s = RandomNodeSampler(103, 20)
    rng = np.random.default_rng(0)
    e1, e2 = list(s.epoch(rng)), list(s.epoch(rng))
    assert _cover(e1, 103) and _cover(e2, 103)
    assert len(e1) == 6 and max(map(len, e1)) == 20
    assert not all(np.array_equal(a, b) for a, b in zip(e1, e2, strict=True))
    assert _cover(s.inference_batches(), 103)


@pytest.mark.parametrize("partitioner", ["metis", "label_propagation"])
def test_cluster_sampler_keeps_more_messages_inside_batches(partitioner):
    # planted communities, so that a partition has something to find
    A = make_csbm(600, n_classes=6, avg_degree=8, homophily=0.9, random_state=0).A
    cluster = ClusterSampler(A, batch_size=100, parts_per_batch=2, seed=0, partitioner=partitioner)
    rnd = RandomNodeSampler(600, 100)
    rng = np.random.default_rng(0)
    cb = list(cluster.epoch(rng))
    assert _cover(cb, 600)
    assert _cover(cluster.inference_batches(), 600)
    assert _intra_fraction(A, cb) > 2 * _intra_fraction(A, list(rnd.epoch(rng)))
    # batches are regrouped each epoch
    assert any(not np.array_equal(a, b) for a, b in zip(cb, cluster.epoch(rng), strict=True))


def test_metis_is_deterministic_for_a_seed_and_handles_edge_cases():
    A = random_graph(200, 5, seed=1)
    assert np.array_equal(metis_partition(A, 4, 0), metis_partition(A, 4, 0))
    assert len(np.unique(metis_partition(A, 4, 0))) == 4
    assert np.array_equal(metis_partition(A, 1, 0), np.zeros(200))
    assert np.array_equal(metis_partition(A[:3][:, :3], 5, 0), np.arange(3))
    empty = random_graph(10, 0, seed=0)
    assert len(np.unique(metis_partition(empty, 2, 0))) == 2


def _inside_parts(A, part):
    coo = A.tocoo()
    return np.mean(part[coo.row] == part[coo.col])


def test_label_propagation_finds_planted_parts_in_equal_sizes():
    # 8 communities of 60 nodes, 95 % of the edges inside them, node ids shuffled
    A = make_csbm(480, n_classes=8, avg_degree=10, homophily=0.95, random_state=1).A
    part = label_propagation_partition(A, 8, seed=0)
    sizes = np.bincount(part, minlength=8)
    assert len(sizes) == 8 and sizes.max() - sizes.min() <= 1
    assert part.dtype == np.int32  # 4 bytes per node, as the sampler keeps it
    rnd = np.random.default_rng(0).integers(0, 8, 480)
    assert _inside_parts(A, part) > 0.6 > 3 * _inside_parts(A, rnd)
    assert np.array_equal(part, label_propagation_partition(A, 8, seed=0))
    assert not np.array_equal(part, label_propagation_partition(A, 8, seed=1))
    # a directed graph (each edge stored once) is cut by its in- and out-neighbours alike
    directed = sp.triu(A, format="csr")
    assert _inside_parts(A, label_propagation_partition(directed, 8, seed=0)) > 0.6


def test_each_node_takes_the_label_most_of_its_neighbours_carry():
    from skvqgnn.samplers import _best_labels

    label = np.array([0, 1, 2, 3, 5, 5, 7, 8, 6, 6, 6, 9])
    neighbours = {
        0: [4, 5, 6],  # labels 5, 5, 7: 5
        1: [6, 7],  # 7 and its own 8 once each: it stays (own label favoured)
        3: [8, 9, 10, 11],  # 6 three times, 9 once: 6
    }
    rows, cols = zip(*[(r, c) for r, cs in neighbours.items() for c in cs], strict=True)
    A = sp.csr_array((np.ones(len(rows)), (rows, cols)), shape=(12, 12))
    label[1] = 8
    for seed in range(5):
        best = _best_labels(np.array([0, 1, 2, 3]), [A], label, np.random.default_rng(seed))
        # node 2 has no neighbour: its own label
        np.testing.assert_array_equal(best, [5, 8, 2, 6])


def test_label_propagation_edge_cases():
    A = random_graph(200, 5, seed=1)
    assert np.array_equal(label_propagation_partition(A, 1, 0), np.zeros(200))
    assert np.array_equal(label_propagation_partition(A[:3][:, :3], 5, 0), np.arange(3))
    empty = random_graph(10, 0, seed=0)  # no edges: still balanced parts
    assert np.array_equal(np.bincount(label_propagation_partition(empty, 2, 0)), [5, 5])


def test_a_metis_failure_names_the_graph_and_the_way_out(monkeypatch):
    import pymetis

    def fail(*args, **kwargs):  # what pymetis raises when METIS cannot allocate (RLIMIT_AS)
        raise RuntimeError("Caught an unknown exception!")

    monkeypatch.setattr(pymetis, "part_graph", fail)
    A = random_graph(200, 5, seed=1)
    with pytest.raises(RuntimeError, match=r"200 nodes, .*most likely out of memory") as info:
        metis_partition(A, 4, 0)
    assert "sampler='random'" in str(info.value)
    assert isinstance(info.value.__cause__, RuntimeError)


@pytest.mark.parametrize("symmetric", [True, False])
def test_a_fit_checks_the_symmetry_of_its_graph_once(monkeypatch, symmetric):
    """The convolutions need to know whether ``A`` is symmetric, and label propagation whether
    its pattern is: a check costs passes over every entry (minutes at 10⁹), so a fit on an
    undirected graph makes it once, the graph's, which the partitioner reuses; on a directed
    one the partitioner checks the pattern itself. The partition is the same either way."""
    import skvqgnn.graph
    import skvqgnn.samplers
    from skvqgnn import Graph, VQGNNClassifier

    A, X, y, _ = make_csbm(600, 3, avg_degree=6, n_features=4, random_state=0)
    if not symmetric:
        A = sp.triu(A, format="csr") + sp.tril(A, format="csr") * 2  # weights one way
    calls = []
    original = skvqgnn.graph.is_symmetric

    def counted(M):
        calls.append(M.shape)
        return original(M)

    monkeypatch.setattr(skvqgnn.graph, "is_symmetric", counted)
    monkeypatch.setattr(skvqgnn.samplers, "is_symmetric", counted)
    graph = Graph(A, X)
    params = dict(partitioner="label_propagation", batch_size=150, max_epochs=1)
    clf = VQGNNClassifier(random_state=0, **params).fit(graph.nodes(), y)
    assert len(calls) == (1 if symmetric else 2)
    assert graph.is_symmetric == symmetric
    n_parts = 4 * 4  # 600 nodes in batches of 150, four parts each
    checked = label_propagation_partition(A, n_parts, clf._fit_seed_)  # its own check
    np.testing.assert_array_equal(clf.partition_, checked)


@pytest.mark.parametrize("n, n_parts", [(1000, 7), (1024, 4), (5, 8), (1, 3)])
def test_contiguous_parts_are_ranges_of_ids_of_equal_size(n, n_parts):
    part = contiguous_partition(n, n_parts)
    assert part.dtype == np.int32 and len(part) == n
    assert np.all(np.diff(part) >= 0)  # ranges of consecutive ids, in order
    sizes = np.bincount(part)
    assert len(sizes) == min(n, n_parts) and sizes.min() >= 1 and sizes.max() - sizes.min() <= 1


def test_contiguous_parts_cost_no_memory_beyond_their_result():
    import tracemalloc

    tracemalloc.start()
    try:
        part = contiguous_partition(1 << 22, 1 << 12)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.1 * part.nbytes, f"{peak / part.nbytes:.2f}x the result"


def test_a_contiguous_cluster_sampler_joins_ranges_of_ids():
    A = random_graph(1000, 4000, seed=0)
    sampler = ClusterSampler(A, 100, parts_per_batch=4, partitioner="contiguous")
    assert [len(p) for p in sampler.parts] == [25] * 40
    for part in sampler.parts:
        assert np.array_equal(part, np.arange(part[0], part[0] + 25))
    batches = list(sampler.epoch(np.random.default_rng(0)))
    assert _cover(batches, 1000) and all(len(b) == 100 for b in batches)
    for batch in batches:  # four ranges of 25
        assert len(np.unique(batch // 25)) == 4
