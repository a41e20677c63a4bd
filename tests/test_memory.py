"""DESIGN §8: the memory of one training step does not grow with n at fixed b and k, nor with the
degree, for every backbone.

A step's memory is measured as the elements of every tensor of its batch plus every tensor the
model's own forward and backward save for the backward pass (``saved_tensors_hooks``): what a
step holds beyond the parameters.
"""

import dataclasses

import numpy as np
import pytest
import torch

from skvqgnn.convolutions import GraphData, make_batch
from skvqgnn.datasets import make_csbm
from skvqgnn.graph import Graph
from skvqgnn.layers import BACKBONES, VQGNN, Backbone, make_backbone
from skvqgnn.vq import AssignmentTable

B, K = 100, 16


def _elements(value) -> int:
    if isinstance(value, torch.Tensor):
        if value.layout == torch.sparse_csr:  # a column and a value per entry, a row pointer
            return 2 * value._nnz() + value.crow_indices().numel()
        return value._nnz() * 3 if value.is_sparse else value.numel()
    if dataclasses.is_dataclass(value):
        return sum(_elements(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, (list, tuple)):
        return sum(_elements(v) for v in value)
    return 0


def _backbone(name: str) -> Backbone:
    return make_backbone(name, heads=2)


def _step_elements(n: int, degree: float, backbone: str) -> tuple[int, int]:
    """(batch elements, saved-for-backward elements) of one training step with two levels."""
    A, X, y, _ = make_csbm(n, n_classes=4, avg_degree=degree, n_features=8, random_state=0)
    bb = _backbone(backbone)
    data = GraphData(Graph(A, X), bb)
    torch.manual_seed(0)
    D = None if any(kind.learnable for kind in data.kinds) else 4  # codeword_dim="auto"
    model = VQGNN(bb, data.kinds, [8, 8, 8, 4], K, D, 0.99, 1.0, 0.0).train()
    rng = np.random.default_rng(0)
    tables = []
    for cb in model.codebooks:
        table = AssignmentTable(n, cb.n_slices, K)
        table.set(np.arange(n), rng.integers(0, K, size=(n, cb.n_slices)))
        table.set_gradients(np.arange(n), rng.integers(0, K, size=(n, cb.n_slices)))
        cb.trust_num.fill_(1.0)
        cb.trust_den.fill_(1.0)
        tables.append(table)
    input_table = None
    if model.input_codebook is not None:
        input_table = AssignmentTable(n, 1, K)
        input_table.set(np.arange(n), rng.integers(0, K, size=(n, 1)))
    nodes = np.sort(rng.choice(n, B, replace=False))
    batch = make_batch(data, nodes, tables, torch.device("cpu"), True, None, input_table)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, _ = model(batch, blue=True)
        logits.pow(2).sum().backward()
    return _elements(batch), sum(saved)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_step_memory_does_not_grow_with_the_graph(backbone):
    small = _step_elements(2_000, 6, backbone)
    large = _step_elements(40_000, 6, backbone)
    for s, l_, what in zip(small, large, ("batch", "saved"), strict=True):
        assert l_ <= 1.2 * s, (backbone, what, small, large)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_step_memory_is_bounded_in_the_degree(backbone):
    """Past b·k out-of-batch entries a batch's sketches and attention groups stop growing:
    eight times the degree costs less than twice the memory."""
    sparse = _step_elements(4_000, 40, backbone)
    dense = _step_elements(4_000, 320, backbone)
    for s, d, what in zip(sparse, dense, ("batch", "saved"), strict=True):
        assert d <= 2 * s, (backbone, what, sparse, dense)


@pytest.mark.parametrize("backbone", ["gcn", "gat"])
def test_set_up_holds_no_matrix_of_all_nodes_beside_the_graph(backbone):
    """A fit's set-up allocates nothing of size n·f on the host beside the graph: the first
    layer's inputs ``C X`` are computed per batch (the convolutions keep the structure of ``C``
    only), the first codebook clusters the first layer's output chunk by chunk, and the input
    codebook of attention (gat) takes the features' moments a block of rows at a
    time. NumPy's allocations are traced (``tracemalloc``); one (n, 64) float32 matrix here is
    41 MB, the structure of ``C`` about 10 MB; gat's exact layer holds the rows of a chunk of
    receivers and of their senders, about 15 MB whatever n."""
    import tracemalloc

    from skvqgnn.inference import initialise_codebooks
    from skvqgnn.samplers import RandomNodeSampler

    n, f = 160_000, 64
    A, X, _, _ = make_csbm(n, 4, avg_degree=6, n_features=f, random_state=0)
    graph = Graph(A, X.astype(np.float32))
    matrix = n * f * 4
    tracemalloc.start()
    try:
        bb = make_backbone(backbone)
        data = GraphData(graph, bb)
        kept = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        D = None if any(kind.learnable for kind in data.kinds) else 4  # codeword_dim="auto"
        model = VQGNN(bb, data.kinds, [f, 64, 4], K, D, 0.99, 1.0, 0.0)
        assert (model.input_codebook is not None) == (backbone != "gcn")
        gen = torch.Generator().manual_seed(0)
        initialise_codebooks(model, data, RandomNodeSampler(n, B), gen, torch.device("cpu"))
        init_peak = tracemalloc.get_traced_memory()[1] - kept
    finally:
        tracemalloc.stop()
    assert kept < matrix / 2, f"the convolutions keep {kept / 1e6:.1f} MB"
    assert init_peak < matrix / 2, f"the initialisation peaked {init_peak / 1e6:.1f} MB higher"


@pytest.mark.parametrize("backbone", ["gcn", "sage", "gin", "gcnii", "transformer"])
def test_fixed_convolutions_store_no_matrix_of_their_own(backbone):
    """A built-in fixed convolution is the graph's adjacency with at most three vectors of n
    (row and column scales, GCN's self-loops as a diagonal): preparing a backbone's
    convolutions allocates at most 12 bytes per node and nothing per stored entry, where a
    normalised copy of ``A`` would hold 8 bytes per entry (values and indices). The
    convolution's entries are right (`test_full_graph_messages_match_a_dense_reference`)."""
    import tracemalloc

    from skvqgnn.convolutions import Fixed

    n = 20_000
    A, X, _, _ = make_csbm(n, 4, avg_degree=30, n_features=2, random_state=0)
    graph = Graph(A, X)
    tracemalloc.start()
    try:
        data = GraphData(graph, make_backbone(backbone))
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    fixed = [c for c in data.convolutions if isinstance(c, Fixed)]
    assert len(fixed) == 1 and fixed[0].matrix is graph.A
    assert kept <= 12 * n + (1 << 16), f"{kept / n:.1f} bytes per node"


def test_a_symmetric_convolution_is_its_own_transpose_without_a_transposed_copy(monkeypatch):
    """The backward messages need ``Cᵀ``; for a symmetric ``C`` (GCN on an undirected graph)
    it is ``C`` itself, found without building a transpose: the check holds a block of
    entries at a time (here 2¹⁶) and a few arrays of n, a fraction of ``C`` on a graph of
    average degree 60, where a transposed copy alone would be ``C``'s size."""
    import tracemalloc

    import skvqgnn.graph

    monkeypatch.setattr(skvqgnn.graph, "_SYMMETRY_ENTRIES", 1 << 16)
    A, X, _, _ = make_csbm(20_000, 4, avg_degree=60, n_features=4, random_state=0)
    conv = GraphData(Graph(A, X), make_backbone("gcn")).convolutions[0]
    C = conv.matrix
    size = C.data.nbytes + C.indices.nbytes + C.indptr.nbytes
    tracemalloc.start()
    try:
        transposed = conv.transposed()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert transposed is C
    assert peak < 0.5 * size, f"the check peaked at {peak / size:.2f}x the size of C"


def test_a_fit_holds_no_int64_array_of_labels_through_its_epochs():
    """`VQGNNClassifier.fit` checks ``y`` into int64 codes, finds the labelled nodes and sets
    the validation nodes aside; through the epochs only the task's targets in the smallest
    integers (int8 here) and its mask of training nodes are held, 2 bytes per node where
    each int64 array of n labels would be 8 (at 10⁸ nodes, 0.75 GiB each). NumPy's
    allocations are traced (``tracemalloc``) and each live one is charged to the innermost
    skvqgnn module that made it: what the classifier's own module holds at the end of the
    first epoch."""
    import tracemalloc

    from skvqgnn import Callback, VQGNNClassifier

    n = 40_000
    A, X, y, split = make_csbm(n, 4, avg_degree=6, n_features=8, random_state=0)
    graph = Graph(A, X)
    labels = np.where(split.train_mask | split.val_mask, y, -1)
    held = []

    class AtEpochEnd(Callback):
        def on_epoch_end(self, fit, record):
            total = 0
            for trace in tracemalloc.take_snapshot().traces:
                files = [frame.filename for frame in reversed(trace.traceback)]  # innermost first
                ours = next((f for f in files if "skvqgnn" in f and "tests" not in f), "")
                total += trace.size if ours.endswith("classifier.py") else 0
            held.append(total)

    clf = VQGNNClassifier(
        batch_size=4096, n_codewords=16, max_epochs=1, random_state=0, device="cpu"
    )
    clf.fit(graph.nodes(), labels)  # imports what a fit imports: traced, they are slow
    tracemalloc.start(16)
    try:
        clf.fit(graph.nodes(), labels, callbacks=[AtEpochEnd()])
    finally:
        tracemalloc.stop()
    assert n <= held[0] <= 3 * n, f"{held[0] / n:.2f} bytes per node held"


@pytest.mark.parametrize("multilabel", [False, True])
def test_predict_keeps_a_small_integer_per_node_not_every_node_logits(monkeypatch, multilabel):
    """`predict` and the end of `fit` (``transduction_``) have VQ inference keep each group's
    class index in the smallest integer (multi-label: a boolean per label) as it runs, never
    the (n, n_classes) float32 logits of every node: 1 byte per node here instead of 16. The
    labels are those of the probabilities' argmax. Inference is observed through the
    estimator's own calls."""
    import skvqgnn.inference
    from skvqgnn import VQGNNClassifier

    kept = []
    run = skvqgnn.inference.vq_inference

    def observed(*args, **kwargs):
        out = run(*args, **kwargs)
        kept.append(out)
        return out

    monkeypatch.setattr(skvqgnn.inference, "vq_inference", observed)
    n = 3_000
    A, X, y, _ = make_csbm(n, 4, avg_degree=6, n_features=8, random_state=0)
    labels = np.stack([y == 0, y % 2 == 1], 1).astype(int) if multilabel else y
    graph = Graph(A, X)
    clf = VQGNNClassifier(batch_size=512, n_codewords=16, max_epochs=2, random_state=0)
    clf.fit(graph.nodes(), labels)
    at_fit = len(kept)
    predicted = clf.predict(graph.nodes())
    assert at_fit >= 1 and len(kept) == at_fit + 1
    for out in (kept[at_fit - 1], kept[-1]):  # transduction_, then predict
        assert out.shape[0] == n and out.element_size() == 1
        assert out.dtype == (torch.bool if multilabel else torch.int8)
    proba = clf.predict_proba(graph.nodes())
    expected = (proba > 0.5).astype(int) if multilabel else clf.classes_[proba.argmax(1)]
    np.testing.assert_array_equal(predicted, expected)
    np.testing.assert_array_equal(clf.transduction_, expected)


def test_the_graph_transformer_set_up_runs_no_exact_layer(monkeypatch):
    """The graph transformer's exact layer attends over every pair of nodes (n² work: hours
    at 10⁶ nodes), so a fit initialises its codebooks from the VQ inference output of each
    layer instead (the input codebook first), a cost linear in n; the codes it starts from
    are real clusterings and the network learns from them."""
    from skvqgnn import VQGNNClassifier
    from skvqgnn.convolutions import GlobalAttention

    def refuse(*args, **kwargs):
        raise AssertionError("an exact global-attention layer ran")

    monkeypatch.setattr(GlobalAttention, "exact_messages", refuse)
    n = 600
    A, X, y, split = make_csbm(n, 3, avg_degree=6, n_features=8, random_state=0)
    clf = VQGNNClassifier(
        backbone="transformer", batch_size=100, n_codewords=16, max_epochs=40, random_state=0
    )
    clf.fit(A, X, np.where(split.train_mask, y, -1))
    for table in [*clf.tables_, clf.input_table_]:
        assert table.codes.shape[0] == n
        for s in range(table.codes.shape[1]):
            assert len(np.unique(table.codes[:, s])) > 4
    test = split.test_mask
    assert np.mean(clf.predict(A, X)[test] == y[test]) > 0.6  # chance: 1/3


@pytest.mark.parametrize("kind", ["dense", "memmap", "csr"])
def test_feature_moments_from_blocks_of_rows_are_the_moments(kind, monkeypatch, tmp_path):
    """The input codebook's standardiser: per-column mean and unbiased variance of the raw
    features, summed a block of rows at a time (here blocks of 7 rows, the last one short),
    equal those of the whole matrix; a sparse matrix's repeated entries count as their sum."""
    import scipy.sparse as sp

    import skvqgnn.inference as inference

    monkeypatch.setattr(inference, "_MOMENT_BYTES", 8 * 5 * 7)
    rng = np.random.default_rng(0)
    n = 40  # not a multiple of the block
    dense = (rng.standard_normal((n, 5)) * [1, 10, 0.1, 3, 0] + 4).astype(np.float32)
    M = dense
    if kind == "memmap":
        np.save(tmp_path / "X.npy", dense)
        M = np.load(tmp_path / "X.npy", mmap_mode="r")
    elif kind == "csr":
        dense[rng.random(dense.shape) < 0.5] = 0.0
        half = sp.csr_array(dense / 2)
        # every entry stored twice, as two halves, side by side in its row
        row_of = np.repeat(np.arange(n), np.diff(half.indptr))
        key = np.r_[row_of, row_of]  # rows in order, each row's two copies together
        order = np.argsort(key, kind="stable")
        M = sp.csr_array(
            (
                np.r_[half.data, half.data][order],
                np.r_[half.indices, half.indices][order],
                half.indptr * 2,
            ),
            shape=dense.shape,
        )
        assert M.nnz == 2 * half.nnz and not M.has_canonical_format
    mean, var = inference._column_moments(M)
    exact = dense.astype(np.float64)
    np.testing.assert_allclose(mean, exact.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(var, exact.var(0, ddof=1), rtol=1e-9, atol=1e-12)


def _resident_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def test_the_graph_transformer_set_up_holds_no_layer_of_all_nodes():
    """The graph transformer's codebooks are fitted on VQ inference batch by batch (one pass
    for the moments and the k-means sample, one for the codes): the process's resident peak
    (``VmHWM``, reset before) rises by under 0.6 of one (n, 128) float32 layer output, which
    torch would allocate outside ``tracemalloc``'s view."""
    import os

    from skvqgnn.inference import initialise_codebooks
    from skvqgnn.samplers import RandomNodeSampler

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the resident peak")
    h = 128

    def set_up(n):
        A, X, _, _ = make_csbm(n, 4, avg_degree=4, n_features=8, random_state=0)
        bb = make_backbone("transformer")
        data = GraphData(Graph(A, X.astype(np.float32)), bb)
        torch.manual_seed(0)
        model = VQGNN(bb, data.kinds, [8, h, 4], K, None, 0.99, 1.0, 0.0)
        gen = torch.Generator().manual_seed(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := VmRSS
        start = _resident_mib("VmRSS")
        sampler = RandomNodeSampler(n, 1000)
        tables, _ = initialise_codebooks(model, data, sampler, gen, torch.device("cpu"))
        return _resident_mib("VmHWM") - start, tables

    set_up(20_000)  # torch's one-off buffers (some 50 MiB here) are taken before measuring
    n = 300_000
    rise, tables = set_up(n)
    layer_mib = n * h * 4 / 2**20  # 146 MiB
    # holding the layer rose 170 MiB here; batch by batch 24-49 MiB (allocator noise)
    assert rise < 0.6 * layer_mib, f"the set-up rose {rise:.0f} MiB, a layer is {layer_mib:.0f}"
    assert len(np.unique(tables[0].codes[:, 0])) > K // 2  # a real clustering


def test_a_codebook_fitted_batch_by_batch_is_the_one_fitted_on_the_whole_layer():
    """Fitting a codebook on VQ inference batch by batch (as the graph transformer's set-up
    does) gives the codes and codewords that fitting it on the same outputs held for every
    node gives: the same moments, k-means sample, seeds and assignment."""
    import copy

    from skvqgnn.inference import initialise_codebook, vq_blocks, vq_inference
    from skvqgnn.samplers import ClusterSampler

    n = 3_000
    A, X, _, _ = make_csbm(n, 4, avg_degree=5, n_features=8, random_state=0)
    bb = make_backbone("transformer")
    graph = Graph(A, X.astype(np.float32))
    data = GraphData(graph, bb)
    torch.manual_seed(0)
    model = VQGNN(bb, data.kinds, [8, 16, 16, 4], K, None, 0.99, 1.0, 0.0).eval()
    sampler = ClusterSampler(graph.A, 300, seed=0)  # batches of parts, not of consecutive ids
    cpu = torch.device("cpu")
    gen = torch.Generator().manual_seed(0)
    input_table = initialise_codebook(model.input_codebook, X, 1.0, gen, cpu, whiten=False)
    tables = [initialise_codebook(model.codebooks[0], X, 0.1, gen, cpu)]  # some codes below
    whole, streamed = copy.deepcopy(model.codebooks[1]), copy.deepcopy(model.codebooks[1])
    H = vq_inference(model, data, tables, input_table, sampler, np.arange(n), cpu, 1)
    a = initialise_codebook(whole, H.numpy(), 0.1, torch.Generator().manual_seed(1), cpu)

    def blocks():
        return vq_blocks(model, data, tables, input_table, sampler, cpu, 1)

    gen = torch.Generator().manual_seed(1)
    b = initialise_codebook(streamed, None, 0.1, gen, cpu, n_rows=n, blocks=blocks)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.grad_codes, b.grad_codes)
    for (name, x), (_, y) in zip(
        whole.state_dict().items(), streamed.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)
