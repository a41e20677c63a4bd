"""Partitioned graphs (``skvqgnn.shards``): the files ``write_shards`` writes, a fit on them in
one process, and the master test: 2 gloo processes, each holding only its own part, train the
model that one process holding every part trains with ``Simulated(2)``, step by step."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from skvqgnn import Callback, VQGNNClassifier, VQGNNLinkPredictor
from skvqgnn.distributed import Simulated
from skvqgnn.graph import Graph
from skvqgnn.layers import make_backbone
from skvqgnn.shards import (
    load_shard,
    read_predictions,
    write_predictions,
    write_shards,
)

from . import distributed_worker as worker
from .test_distributed import _same_state, launch


def directed(A):
    """``A`` without a random half of its entries: a directed graph."""
    A = sp.csr_array(A)
    keep = np.random.default_rng(1).random(A.nnz) < 0.5
    coo = A.tocoo()
    return sp.csr_array(
        (coo.data[keep], (coo.row[keep], coo.col[keep])), shape=A.shape, dtype=np.float32
    )


def sharded_graph(name):
    A, X, y = worker.data()
    return (directed(A) if name.endswith("directed") else A), X, y


class Seen(Callback):
    """The batches of a fit, in order."""

    def __init__(self):
        self.nodes = []

    def on_step_start(self, fit, batch_nodes):
        self.nodes.append(batch_nodes)


@pytest.fixture(scope="module")
def partitions(tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    for name, config in worker.SHARDED.items():
        A, X, y = sharded_graph(name)
        write_shards(out / name, A, X, 2, y=y, backbone=config["backbone"])
    return out


# -- the files -------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["gcn", "sage", "gin", "gcnii"])
def test_each_part_holds_its_rows_of_the_relabelled_graph(tmp_path, backbone):
    """Every file is the rank's rows of what the whole relabelled graph gives: the convolution
    rows, their transposed rows (a directed graph), the first layer's inputs ``C X``."""
    A, X, y = sharded_graph("directed")
    write_shards(tmp_path, A, X, 3, y=y, backbone=backbone)
    meta = json.loads((tmp_path / "partition.json").read_text())
    order = np.load(tmp_path / "nodes.npy")
    assert sorted(order.tolist()) == list(range(600))
    whole = Graph(sp.csr_array(A)[order][:, order], X[order])
    convs = make_backbone(backbone).convolutions(whole.A)
    offsets = meta["offsets"]
    assert offsets[0] == 0 and offsets[-1] == 600 and len(offsets) == 4
    for r in range(3):
        shard = load_shard(tmp_path, r)
        lo, hi = offsets[r], offsets[r + 1]
        assert (shard.start, shard.stop) == (lo, hi)
        np.testing.assert_array_equal(np.asarray(shard.X), whole.X[lo:hi])
        np.testing.assert_array_equal(shard.labels, y[order[lo:hi]])  # classes 0, 1, 2; -1
        np.testing.assert_array_equal(shard.original_nodes, order[lo:hi])
        data = shard.graph_data(make_backbone(backbone))
        assert data.kinds == [type(c) for c in convs]
        for conv, ref in zip(data.convolutions, convs, strict=True):
            if ref.matrix is None:
                own = conv.inputs_of(np.arange(lo, hi), "cpu")
                np.testing.assert_array_equal(own, whole.X[lo:hi])
                continue
            C = ref.block(0, 600)  # the whole convolution, its diagonal included
            assert (conv.matrix != C[lo:hi]).nnz == 0
            assert (conv.transposed() != C.T.tocsr()[lo:hi]).nnz == 0
            rows = np.arange(lo, hi)
            np.testing.assert_allclose(
                conv.inputs_of(rows, "cpu").numpy(), (C @ whole.X)[lo:hi], atol=1e-5
            )


def test_a_symmetric_convolution_keeps_one_matrix(tmp_path):
    A, X, y = worker.data()
    write_shards(tmp_path, A, X, 2, y=y, backbone="gcn")
    assert not list(tmp_path.glob("rank*/conv*_transposed.npz"))
    data = load_shard(tmp_path, 1).graph_data(make_backbone("gcn"))
    assert data.convolutions[0].transposed() is data.convolutions[0].matrix


def test_features_are_memory_mapped(tmp_path):
    A, X, y = worker.data()
    write_shards(tmp_path, A, X, 2, y=y)
    shard = load_shard(tmp_path, 0)
    assert isinstance(shard.X, np.memmap)
    assert isinstance(shard.graph_data(make_backbone("gcn")).convolutions[0].inputs, np.memmap)
    # index arrays in the type SciPy loads them in: no converted copy when a rank loads them
    with np.load(tmp_path / "rank0" / "conv0.npz") as f:
        assert f["indices"].dtype == np.int32 and f["indptr"].dtype == np.int32


@pytest.mark.parametrize("partitioner", ["metis", "label_propagation", "contiguous"])
def test_partitioners_keep_ranks_balanced(tmp_path, partitioner):
    A, X, y = worker.data()
    write_shards(tmp_path, A, X, 4, y=y, partitioner=partitioner)
    sizes = np.diff(json.loads((tmp_path / "partition.json").read_text())["offsets"])
    assert sizes.sum() == 600 and sizes.min() >= 120, sizes


def test_write_shards_refuses_what_it_cannot_partition(tmp_path):
    A, X, y = worker.data()
    with pytest.raises(ValueError, match="fixed convolutions only"):
        write_shards(tmp_path / "gat", A, X, 2, y=y, backbone="gat")
    with pytest.raises(ValueError, match="integer class labels"):
        write_shards(tmp_path / "str", A, X, 2, y=y.astype(str))
    with pytest.raises(ValueError, match="n_parts"):
        write_shards(tmp_path / "zero", A, X, 0, y=y)
    with pytest.raises(ValueError, match="partitioner"):
        write_shards(tmp_path / "p", A, X, 2, y=y, partitioner="spectral")
    write_shards(tmp_path / "ok", A, X, 2, y=y)
    with pytest.raises(FileExistsError):
        write_shards(tmp_path / "ok", A, X, 2, y=y)
    with pytest.raises(ValueError, match="rank must be"):
        load_shard(tmp_path / "ok", 2)


# -- fits in one process ---------------------------------------------------------------------------
PARAMS = dict(worker.SHARDED_COMMON, hidden_layer_sizes=(16,), max_epochs=2)


def test_fit_refuses_a_mismatched_partition_or_estimator(tmp_path):
    A, X, y = worker.data()
    write_shards(tmp_path / "p", A, X, 2, y=y, backbone="gcn")
    write_shards(tmp_path / "unlabelled", A, X, 2, backbone="gcn")
    shard = load_shard(tmp_path / "p", "all")
    with pytest.raises(ValueError, match="written for backbone 'gcn', not 'sage'"):
        VQGNNClassifier(**{**PARAMS, "backbone": "sage"}).fit(shard)
    with pytest.raises(ValueError, match="parts \\[1\\] of a partition into 2"):
        VQGNNClassifier(**PARAMS).fit(load_shard(tmp_path / "p", 1))
    with pytest.raises(ValueError, match="simulate 2 ranks"):
        VQGNNClassifier(**PARAMS).fit(shard, distributed=Simulated(3))
    with pytest.raises(ValueError, match="batch_size"):
        VQGNNClassifier(**{**PARAMS, "batch_size": None}).fit(shard)
    with pytest.raises(ValueError, match="not y"):
        VQGNNClassifier(**PARAMS).fit(shard, y=y)
    with pytest.raises(ValueError, match="has no labels"):
        VQGNNClassifier(**PARAMS).fit(load_shard(tmp_path / "unlabelled", "all"))
    with pytest.raises(TypeError, match="link prediction on a partitioned graph"):
        VQGNNLinkPredictor(batch_size=100).fit(shard)
    clf = VQGNNClassifier(**PARAMS).fit(shard)
    with pytest.raises(ValueError, match="inference='vq'"):
        clf.set_params(inference="exact").predict(shard)
    other = tmp_path / "other"
    write_shards(other, A, X, 2, y=np.where(np.arange(600) % 3 == 0, y, -1), backbone="gcn")
    with pytest.raises(ValueError, match="not the partitioned graph this model was trained on"):
        clf.set_params(inference="vq").predict(load_shard(other, "all"))


def test_a_partitioned_fit_learns_what_a_whole_graph_fit_learns(tmp_path):
    """Cora, two parts in one process (Simulated(2)): the test accuracy of a partitioned fit
    is within 3 points of a fit on the graph, at depth 1 and 2; its predictions come back in
    the original node order."""
    from skvqgnn.datasets import load_cora

    A, X, y, split = load_cora()
    y_train = np.where(split.train_mask, y, -1)
    write_shards(tmp_path, A, X, 2, y=y_train, backbone="gcn")
    shard = load_shard(tmp_path, "all")
    test = split.test_mask
    for depth in (1, 2):
        params = dict(
            sampler="random", batch_size=512, hidden_layer_sizes=(64,) * depth, max_epochs=40
        )
        clf = VQGNNClassifier(**params, random_state=0).fit(shard, distributed=Simulated(2))
        write_predictions(shard, clf.predict(shard))
        ours = (read_predictions(tmp_path)[test] == y[test]).mean()
        whole = VQGNNClassifier(**params, random_state=0).fit(A, X, y_train)
        theirs = (whole.predict(A, X)[test] == y[test]).mean()
        assert ours > 0.7 and ours > theirs - 0.03, (depth, ours, theirs)
        np.testing.assert_array_equal(clf.transduction_, clf.predict(shard))
        # the network is the whole graph's: it predicts the graph as given, nodes in its order
        assert (clf.predict(A, X)[test] == y[test]).mean() > 0.7


@pytest.mark.parametrize("backbone", ["gin", "gcnii"])
def test_other_fixed_backbones_train_on_a_partition(tmp_path, backbone):
    """GIN (a root message and a sum) and GCNII (initial residuals, two hidden layers) train on
    two parts (cluster batches, the default) about as well as on the whole graph: mean accuracy
    over seeds 0-2 on the labelled nodes within 5 points (one seed varies by 10 or more)."""
    A, X, y = worker.data()
    write_shards(tmp_path, A, X, 2, y=y, backbone=backbone)
    shard = load_shard(tmp_path, "all")
    labelled = y >= 0
    ours, theirs = [], []
    for seed in range(3):
        params = {
            **PARAMS,
            "backbone": backbone,
            "sampler": "cluster",
            "hidden_layer_sizes": (16, 16),
            "max_epochs": 15,
            "random_state": seed,
        }
        clf = VQGNNClassifier(**params).fit(shard, distributed=Simulated(2))
        whole = VQGNNClassifier(**params).fit(A, X, y)
        ours.append((clf.predict(A, X)[labelled] == y[labelled]).mean())
        theirs.append((whole.predict(A, X)[labelled] == y[labelled]).mean())
    assert np.mean(ours) > 0.7 and np.mean(ours) > np.mean(theirs) - 0.05, (ours, theirs)


def test_sparse_features_and_a_warm_start(tmp_path):
    """Sparse X (CSR files, the first layer's inputs too) with GraphSAGE, whose root messages
    read the features, trains the model the same values stored densely train; a warm start on
    the same partition goes on from the fitted state."""
    A, X, y = sharded_graph("directed")
    X = np.where(X > 0.5, X, 0.0).astype(np.float32)
    write_shards(tmp_path / "sparse", A, sp.csr_array(X), 2, y=y, backbone="sage")
    write_shards(tmp_path / "dense", A, X, 2, y=y, backbone="sage")
    assert (tmp_path / "sparse" / "rank0" / "features.npz").exists()
    shard = load_shard(tmp_path / "sparse", "all")
    assert sp.issparse(shard.X) and shard.X.shape == (600, 16)
    params = {**PARAMS, "backbone": "sage", "max_epochs": 3}
    clf = VQGNNClassifier(**params).fit(shard, distributed=Simulated(2))
    dense = load_shard(tmp_path / "dense", "all")
    same = VQGNNClassifier(**params).fit(dense, distributed=Simulated(2))
    for key, value in same.model_.state_dict().items():
        np.testing.assert_allclose(clf.model_.state_dict()[key], value, atol=1e-4, err_msg=key)
    np.testing.assert_array_equal(clf.predict(shard), same.predict(dense))
    tables = [t.codes.copy() for t in clf.tables_]
    clf.set_params(warm_start=True, max_epochs=1).fit(shard, distributed=Simulated(2))
    assert clf.n_iter_ == 4 and len(clf.history_) == 4
    assert any(not np.array_equal(a, t.codes) for a, t in zip(tables, clf.tables_, strict=True))


def test_one_process_holding_every_part_trains_on_every_node(tmp_path):
    """Under Local, one batch per step, every part's batches are trained on: each node is in
    exactly one batch per epoch."""
    A, X, y = worker.data()
    write_shards(tmp_path, A, X, 3, y=y)
    seen = Seen()
    VQGNNClassifier(**{**PARAMS, "max_epochs": 1}).fit(load_shard(tmp_path), callbacks=[seen])
    everyone = np.concatenate(seen.nodes)
    assert np.array_equal(np.sort(everyone), np.arange(600))
    assert len(seen.nodes) == 3 * 2  # 3 parts of 200 nodes, 2 batches each at batch_size=100


def test_cluster_batches_are_clusters_inside_each_part(tmp_path):
    """sampler="cluster": each batch lies inside one part, is made of METIS clusters of the
    part's own edges (more of its edges inside the batch than random batches have), every
    node is in one batch per epoch, and every part gives the same number of batches."""
    A, X, y = worker.data()
    write_shards(tmp_path, A, X, 2, y=y)
    shard = load_shard(tmp_path, "all")
    offsets = shard.offsets
    order = np.load(tmp_path / "nodes.npy")
    relabelled = sp.csr_array(A)[order][:, order]

    def inside(batches):
        return np.mean([relabelled[b][:, b].nnz / max(1, relabelled[b].nnz) for b in batches])

    seen = {}
    for sampler in ("cluster", "random"):
        seen[sampler] = Seen()
        params = {**PARAMS, "sampler": sampler, "max_epochs": 1}
        VQGNNClassifier(**params).fit(shard, callbacks=[seen[sampler]])
    batches = seen["cluster"].nodes
    assert len(batches) == 2 * 3  # 300 nodes per part at batch_size=100
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(600))
    for b in batches:
        part = np.searchsorted(offsets, b.min(), "right")
        assert part == np.searchsorted(offsets, b.max(), "right")
    assert inside(batches) > 1.5 * inside(seen["random"].nodes)


def test_contiguous_cluster_batches_are_ranges_inside_each_part(tmp_path):
    """partitioner="contiguous" on a partition: each part is cut into ranges of its own ids,
    and a batch joins ranges of one part; every node once per epoch."""
    A, X, y = worker.data()
    write_shards(tmp_path, A, X, 2, y=y)
    shard = load_shard(tmp_path, "all")
    seen = Seen()
    params = {**PARAMS, "sampler": "cluster", "partitioner": "contiguous", "max_epochs": 1}
    VQGNNClassifier(**params).fit(shard, callbacks=[seen])
    batches = seen.nodes
    assert len(batches) == 2 * 3 and np.array_equal(
        np.sort(np.concatenate(batches)), np.arange(600)
    )
    ranges = 300 // (3 * 4)  # 3 batches of 4 ranges per part of 300 nodes
    for b in batches:
        part = np.searchsorted(shard.offsets, b.min(), "right")
        assert part == np.searchsorted(shard.offsets, b.max(), "right")
        local = b - shard.offsets[part - 1]
        assert len(np.unique(local // ranges)) == 4  # four whole ranges of the part's ids


# -- two processes ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_ranks(partitions):
    codes, errs, results = launch("shards", partitions)
    assert codes == [0, 0], errs
    return results


@pytest.mark.parametrize("name", list(worker.SHARDED))
def test_each_rank_holds_only_its_part(two_ranks, partitions, name):
    offsets = json.loads((partitions / name / "partition.json").read_text())["offsets"]
    for rank in (0, 1):
        held = two_ranks[rank][name]["held"]
        n_r = offsets[rank + 1] - offsets[rank]
        assert held["ranks"] == [rank] and held["features"] == (n_r, 16)
        for rows, transposed, inputs in held["matrices"]:
            assert rows == (n_r, 600) and transposed == (n_r, 600) and inputs == (n_r, 16)


@pytest.mark.parametrize("name", list(worker.SHARDED))
def test_partitioned_ranks_equal_the_one_process_reference(two_ranks, partitions, name):
    """Step by step, each rank's whole state (parameters, codebooks, both codes of every
    node) equals that of one process holding both parts under Simulated(2); then the same
    model, history and codes at the end, and the ranks' prediction files hold the reference's
    predictions."""
    shard = load_shard(partitions / name, "all")
    recorder = worker.Recorder()
    reference = VQGNNClassifier(**{**worker.SHARDED_COMMON, **worker.SHARDED[name]})
    reference.fit(shard, callbacks=[recorder], distributed=Simulated(2))
    after_step = recorder.states[1::2]  # the reference ends a step every second batch
    for rank in (0, 1):
        got = two_ranks[rank][name]
        assert len(got["steps"]) == worker.N_RECORDED
        for step, expected in enumerate(after_step):
            np.testing.assert_allclose(
                got["steps"][step], expected, rtol=1e-6, atol=1e-6, err_msg=f"{rank} {step}"
            )
        for epoch, expected in enumerate(recorder.epochs):
            np.testing.assert_allclose(got["epochs"][epoch], expected, rtol=1e-6, atol=1e-6)
        ours = worker.summary(reference)
        _same_state(got["state"], ours["state"], atol=1e-5)
        assert [h["loss"] for h in got["history"]] == pytest.approx(
            [h["loss"] for h in ours["history"]], rel=1e-6
        )
        for a, b in zip(got["tables"], ours["tables"], strict=True):
            assert np.array_equal(a, b)
    assert not np.array_equal(two_ranks[0][name]["steps"][0], two_ranks[0][name]["steps"][1])
    expected = np.empty(600, dtype=np.int64)
    expected[shard.original_nodes] = reference.predict(shard)
    np.testing.assert_array_equal(read_predictions(partitions / name), expected)
    if worker.SHARDED[name].get("early_stopping"):
        scores = [h["val_score"] for h in two_ranks[0][name]["history"]]
        assert scores == pytest.approx([h["val_score"] for h in reference.history_], abs=1e-12)
