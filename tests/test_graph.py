import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.model_selection import train_test_split

from skvqgnn import Graph, NodeSet
from skvqgnn.datasets import make_csbm
from skvqgnn.graph import (
    attention_mask,
    gcn_norm,
    gcn_norm_scales,
    has_repeats,
    is_symmetric,
    mean_norm,
    stable_order,
    with_unit_self_loops,
)


def _path(n=4):
    return sp.eye(n, k=1) + sp.eye(n, k=-1)


def test_accepts_every_sparse_format_and_dense():
    X = np.ones((4, 2))
    ref = Graph(_path(), X)
    for A in (_path().tocoo(), _path().tolil(), _path().todense(), sp.csc_array(_path())):
        G = Graph(A, X)
        assert G.A.format == "csr" and G.A.dtype == np.float32
        assert (G.A != ref.A).nnz == 0
    G = Graph(_path(), sp.csr_matrix(X))
    assert sp.issparse(G.X) and G.X.dtype == np.float32


def test_duplicates_are_summed_and_input_not_modified():
    A = sp.coo_array((np.ones(3), ([0, 0, 1], [1, 1, 0])), shape=(2, 2))
    G = Graph(A, np.zeros((2, 1)))
    assert G.A[0, 1] == 2.0
    assert A.nnz == 3  # the caller's matrix is untouched


@pytest.mark.parametrize(
    "A, X, message",
    [
        (np.ones((3, 2)), np.ones((3, 1)), "A must be square"),
        (np.ones(3), np.ones((3, 1)), "A must be 2-D"),
        (_path(), np.ones((3, 1)), "X has 3 rows but A has 4 nodes"),
        (_path() * np.nan, np.ones((4, 1)), "A contains NaN"),
        (-_path(), np.ones((4, 1)), "negative edge weights"),
        (_path(), np.full((4, 1), np.inf), "X contains NaN or infinite"),
        (_path(), np.ones(4), "X must be 2-D"),
        (_path(), np.array([["a"]] * 4), "X must hold numbers"),
    ],
)
def test_bad_input_names_the_argument(A, X, message):
    with pytest.raises((ValueError, TypeError), match=message):
        Graph(A, X)


def test_gcn_norm_matches_the_formula():
    A = _path(3).toarray()
    A_tilde = A + np.eye(3)
    d = A_tilde.sum(1)
    expected = A_tilde / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(gcn_norm(sp.csr_array(A)).toarray(), expected, rtol=1e-6)
    # an existing self-loop keeps its weight instead of gaining another
    A2 = A + np.diag([2.0, 0, 0])
    C = gcn_norm(sp.csr_array(A2)).toarray()
    d2 = (A2 + np.diag([0, 1.0, 1.0])).sum(1)
    assert C[0, 0] == pytest.approx(2.0 / d2[0])


def _loops_case(n, seed, index_dtype, unsorted):
    rng = np.random.default_rng(seed)
    A = sp.random_array((n, n), density=0.05, format="csr", rng=rng, dtype=np.float32)
    A.data = rng.uniform(0.5, 2.0, A.nnz).astype(np.float32)
    A = sp.csr_array(A + sp.diags_array(rng.integers(0, 2, n) * 3.0)).astype(np.float32)
    A.sort_indices()
    for i in np.flatnonzero(A.diagonal() != 0)[::3]:  # some loops stored with weight 0
        row = slice(A.indptr[i], A.indptr[i + 1])
        A.data[row][A.indices[row] == i] = 0.0
    A.indices, A.indptr = A.indices.astype(index_dtype), A.indptr.astype(index_dtype)
    if unsorted:
        for i in range(n):
            row = slice(A.indptr[i], A.indptr[i + 1])
            order = rng.permutation(A.indptr[i + 1] - A.indptr[i])
            A.indices[row], A.data[row] = A.indices[row][order], A.data[row][order]
        A.has_sorted_indices = False
    return A


@pytest.mark.parametrize("chunk", [5, 1 << 20])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("unsorted", [False, True])
def test_unit_self_loops_are_the_sum_with_the_missing_diagonal(
    monkeypatch, chunk, index_dtype, unsorted
):
    """GCN's ``A + I`` on the nodes without a (non-zero) self-loop, built by insertion: the
    same entries, order, values and index width as SciPy's sum, whatever the chunks of rows
    scanned for the diagonal (5 entries: many chunks, rows split between none)."""
    import skvqgnn.graph

    monkeypatch.setattr(skvqgnn.graph, "_LOOP_ENTRIES", chunk)
    A = _loops_case(120, 0, index_dtype, unsorted)
    missing = (A.diagonal() == 0).astype(np.float32)
    assert 0 < missing.sum() < len(missing) and (A.data == 0).any()
    expected = sp.csr_array(A + sp.diags_array(missing, format="csr"))
    expected.sort_indices()
    C = with_unit_self_loops(A)
    assert C.has_sorted_indices and C.dtype == np.float32
    assert C.indices.dtype == expected.indices.dtype == C.indptr.dtype
    np.testing.assert_array_equal(C.indptr, expected.indptr)
    np.testing.assert_array_equal(C.indices, expected.indices)
    np.testing.assert_array_equal(C.data, expected.data)


@pytest.mark.parametrize(
    "build, bound", [(with_unit_self_loops, 0.3), (attention_mask, 0.5)], ids=["loops", "mask"]
)
def test_self_loops_are_inserted_without_a_second_matrix(monkeypatch, build, bound):
    """The loops are inserted into the result's arrays: the temporaries are a byte per entry,
    a few arrays of n and a chunk of rows (2¹⁶ entries here, a small part of the graph as on
    large graphs), where the sum ``A + I`` held a float32 copy of ``A`` beside it (and GAT's
    mask a copy of ``A``'s pattern too, about twice the result)."""
    import tracemalloc

    import skvqgnn.graph

    monkeypatch.setattr(skvqgnn.graph, "_LOOP_ENTRIES", 1 << 16)
    A, X, _, _ = make_csbm(50_000, 4, avg_degree=40, n_features=2, random_state=0)
    A = Graph(A, X).A
    tracemalloc.start()
    try:
        C = build(A)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = C.data.nbytes + C.indices.nbytes + C.indptr.nbytes
    assert held >= size
    assert peak - held < bound * size, f"temporaries of {(peak - held) / size:.2f}x the result"


@pytest.mark.parametrize("unsorted", [False, True])
def test_the_attention_mask_is_the_pattern_of_a_plus_i(unsorted):
    """GAT's mask: every stored non-zero of ``A`` and every diagonal entry, a stored zero
    weight included, as unit entries with sorted indices; other stored zeros are dropped."""
    A = _loops_case(120, 1, np.int32, unsorted)
    off = np.flatnonzero(A.indices != np.repeat(np.arange(120), np.diff(A.indptr)))
    A.data[off[::5]] = 0.0  # stored zeros off the diagonal too
    expected = (A.toarray() != 0) | np.eye(120, dtype=bool)
    M = attention_mask(A)
    assert M.has_sorted_indices and M.dtype == np.float32 and (M.data == 1.0).all()
    assert M.nnz == expected.sum()
    np.testing.assert_array_equal(M.toarray() != 0, expected)


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("unsorted", [False, True])
def test_gcn_scales_give_gcn_norm_from_the_adjacency(index_dtype, unsorted):
    """``diag(s) A diag(s) + diag(diagonal)`` is `gcn_norm` (loops stored with weights,
    stored zeros that become unit loops, missing loops), and ``A`` is left as it was."""
    A = _loops_case(120, 1, index_dtype, unsorted)
    before = A.copy()
    s, diagonal = gcn_norm_scales(A)
    assert s.dtype == diagonal.dtype == np.float32
    got = s[:, None] * A.toarray() * s[None, :] + np.diag(diagonal)
    dense = A.toarray().astype(np.float64)
    loops = np.diag(dense) == 0  # missing or stored zero: a unit loop
    dense[np.diag_indices_from(dense)] += loops
    inv = 1 / np.sqrt(dense.sum(1))
    np.testing.assert_allclose(got, inv[:, None] * dense * inv[None, :], rtol=1e-6, atol=0)
    np.testing.assert_allclose(got, gcn_norm(A).toarray(), rtol=1e-6, atol=0)
    loops = A.diagonal() != 0
    assert np.all(diagonal[loops] == 0) and np.all(diagonal[~loops] > 0)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(A, name), getattr(before, name))


def test_mean_norm_shares_the_adjacency_index_arrays():
    A, X, _, _ = make_csbm(500, 3, avg_degree=6, n_features=2, random_state=0)
    A = Graph(A, X).A
    C = mean_norm(A)
    assert np.shares_memory(C.indices, A.indices) and np.shares_memory(C.indptr, A.indptr)
    assert not np.shares_memory(C.data, A.data)
    sums = C.sum(axis=1)
    np.testing.assert_allclose(sums[np.diff(A.indptr) > 0], 1.0, rtol=1e-6)


def test_mean_norm_rows_sum_to_one_and_isolated_rows_are_zero():
    A = sp.csr_array(np.array([[0, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=float))
    C = mean_norm(A).toarray()
    np.testing.assert_allclose(C.sum(1), [1, 1, 0])
    assert C[0, 1] == 0.5


def test_fingerprint_is_content_based():
    X = np.arange(8.0).reshape(4, 2)
    assert Graph(_path(), X).fingerprint == Graph(_path().tocoo(), X.copy()).fingerprint
    X2 = X.copy()
    X2[0, 0] = 99
    assert Graph(_path(), X).fingerprint != Graph(_path(), X2).fingerprint
    assert Graph(_path(), X).fingerprint != Graph(_path() * 2, X).fingerprint


def test_fingerprint_ignores_storage_dtype_format_and_index_width():
    rng = np.random.default_rng(0)
    X = np.where(rng.random((30, 5)) < 0.3, rng.random((30, 5)), 0.0)  # float64, dense
    A = sp.random_array((30, 30), density=0.1, format="csr", rng=rng)
    A.data[:] = 1.0
    wide = sp.csr_array(A)
    wide.indptr, wide.indices = wide.indptr.astype(np.int64), wide.indices.astype(np.int64)
    narrow = sp.csr_array(A)
    narrow.indptr, narrow.indices = narrow.indptr.astype(np.int32), narrow.indices.astype(np.int32)
    reference = Graph(A, X).fingerprint
    forms = {
        "sparse X": (A, sp.csr_matrix(X)),
        "COO X": (A, sp.coo_array(X)),
        "float32 X": (A, X.astype(np.float32)),
        "numbers held as objects": (A, X.astype(object)),
        "int64 indices": (wide, X),
        "int32 indices": (narrow, X),
        "dense A": (A.toarray(), X),
        "int A": (A.astype(np.int64), X),
        "CSC A": (sp.csc_matrix(A), sp.csc_array(X)),
    }
    for name, (A_, X_) in forms.items():
        assert Graph(A_, X_).fingerprint == reference, name
    # a stored zero is no content either
    Xs = sp.csr_array(X)
    Xs.data[0] = 0.0
    X0 = Xs.toarray()
    assert Graph(A, Xs).fingerprint == Graph(A, X0).fingerprint
    # and content still counts: one feature value, one edge
    assert Graph(A, X0).fingerprint != reference
    assert Graph(A + sp.eye_array(30, format="csr"), X).fingerprint != reference


def test_fingerprint_of_features_without_zeros_equals_their_sparse_form(monkeypatch):
    import skvqgnn.graph

    # chunks of 8 rows of 5 features, the last one shorter
    monkeypatch.setattr(skvqgnn.graph, "_HASH_VALUES", 40)
    rng = np.random.default_rng(1)
    X = rng.uniform(0.5, 1.5, (30, 5))
    A = sp.random_array((30, 30), density=0.1, format="csr", rng=rng)
    dense = Graph(A, X).fingerprint
    assert dense == Graph(A, sp.csr_array(X)).fingerprint
    X[12, 3] = 0.0  # one chunk with a zero among chunks without
    assert Graph(A, X).fingerprint == Graph(A, sp.csr_array(X)).fingerprint != dense
    monkeypatch.undo()  # one chunk of 30,000 rows: its column ids fed in pieces of 13,107 rows
    X = rng.uniform(0.5, 1.5, (30_000, 5))
    A = sp.random_array((30_000, 30_000), density=1e-4, format="csr", rng=rng)
    assert Graph(A, X).fingerprint == Graph(A, sp.csr_array(X)).fingerprint
    X[::7, 2] = 0.0  # zeros throughout: non-zeros searched in pieces of 13,107 rows
    assert Graph(A, X).fingerprint == Graph(A, sp.csr_array(X)).fingerprint


def test_pickle_drops_the_cache():
    G = Graph(_path(), np.ones((4, 2)))
    G.cached("big", lambda: np.zeros(10_000))
    G2 = pickle.loads(pickle.dumps(G))
    assert G2._cache == {}
    assert (G2.A != G.A).nnz == 0


def test_nodeset_behaves_as_sklearn_expects():
    G = Graph(_path(6), np.ones((6, 2)))
    nodes = G.nodes([5, 1, 3, 0])
    assert nodes.shape == (4,) and len(nodes) == 4
    assert not hasattr(nodes, "fit") and not hasattr(nodes, "iloc")
    sub = nodes[(np.array([0, 2]), Ellipsis)]  # how sklearn indexes
    assert isinstance(sub, NodeSet) and sub.graph is G
    assert sub.index.tolist() == [5, 3]
    assert nodes[np.array([True, False, False, True])].index.tolist() == [5, 0]
    assert nodes[1:3].index.tolist() == [1, 3]
    assert nodes[2].index.tolist() == [3]
    with pytest.raises(TypeError, match="cannot become a NumPy array"):
        np.asarray(nodes)
    a, b = train_test_split(nodes, test_size=0.5, random_state=0)
    assert isinstance(a, NodeSet) and a.graph is G
    assert sorted(a.index.tolist() + b.index.tolist()) == [0, 1, 3, 5]


def test_node_index_errors():
    G = Graph(_path(), np.ones((4, 1)))
    with pytest.raises(IndexError, match="out of range"):
        G.nodes([4])
    with pytest.raises(IndexError, match="integers"):
        G.nodes([0.5])
    with pytest.raises(IndexError, match="boolean node mask"):
        G.nodes(np.array([True, False]))
    assert G.nodes([-1]).index.tolist() == [3]


def test_every_scipy_sparse_format_is_taken():
    A = _path()
    X = np.arange(8.0).reshape(4, 2)
    reference = Graph(A, X).fingerprint
    for fmt in ("dok_array", "lil_array", "dia_array", "bsr_array", "dok_matrix", "lil_matrix"):
        convert = getattr(sp, fmt)
        assert Graph(convert(A), convert(X)).fingerprint == reference, fmt


@pytest.mark.parametrize("block", [3, 1 << 22])
def test_is_symmetric_is_exact_block_by_block(monkeypatch, block):
    import skvqgnn.graph

    monkeypatch.setattr(skvqgnn.graph, "_SYMMETRY_ENTRIES", block)
    rng = np.random.default_rng(0)
    for trial in range(60):
        n = int(rng.integers(1, 25))
        M = sp.random(n, n, density=0.2, random_state=trial, format="csr", dtype=np.float32)
        for candidate in (M, M + M.T, (M + M.T) * (M + M.T)):
            candidate = sp.csr_array(candidate)
            assert is_symmetric(candidate) == ((candidate != candidate.T).nnz == 0)
    cycle = sp.csr_array((np.ones(5), (np.arange(5), (np.arange(5) + 1) % 5)), shape=(5, 5))
    assert not is_symmetric(cycle)  # every in-degree equals its out-degree, yet directed
    weighted = sp.csr_array(np.array([[0, 1, 0], [2, 0, 0], [0, 0, 1]], dtype=np.float32))
    assert not is_symmetric(weighted)  # the same pattern both ways, other weights
    assert is_symmetric(weighted + weighted.T)


@pytest.mark.parametrize("bound", [1 << 16, (1 << 16) + 1, 1 << 20, 1 << 32, 1 << 40])
def test_stable_order_is_numpys_stable_sort(bound):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, bound, 50_000)
    keys[::7] = keys[3]  # repeated keys, whose order the sort must keep
    keys[1::11] = bound - 1
    for dtype in (np.int32, np.int64):
        if bound > np.iinfo(dtype).max:
            continue
        k = keys.astype(dtype)
        np.testing.assert_array_equal(stable_order(k, bound), np.argsort(k, kind="stable"))


def test_is_symmetric_passes_over_the_entries_at_most_32_times(monkeypatch):
    """Each block of the transpose costs a pass over every entry, so the blocks grow with
    the graph past 32 of them: at 10⁹ entries, 250 passes of 4·10⁶ entries took minutes.
    A block is sorted once (`stable_order`): its calls count the blocks."""
    import skvqgnn.graph

    monkeypatch.setattr(skvqgnn.graph, "_SYMMETRY_ENTRIES", 16)  # the cap that would bind
    calls = []
    original = skvqgnn.graph.stable_order
    monkeypatch.setattr(skvqgnn.graph, "stable_order", lambda *a: calls.append(1) or original(*a))
    A, _, _, _ = make_csbm(2000, 3, avg_degree=5, n_features=2, random_state=0)
    assert A.nnz > 32 * 16 * 16
    assert is_symmetric(sp.csr_array(A))
    assert 16 <= len(calls) <= 33, len(calls)  # blocks end at row boundaries: one more


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_is_symmetric_on_a_graph_with_more_than_65536_nodes(index_dtype):
    # 120,000 entries make two blocks of the transpose, each of more than 2¹⁶ rows: sorted by
    # two 16-bit passes
    n = 200_000
    rng = np.random.default_rng(0)
    src = rng.integers(0, n, 60_000)
    dst = rng.integers(0, n, 60_000)
    w = rng.uniform(0.5, 1.5, 60_000).astype(np.float32)
    A = sp.csr_array((w, (src, dst)), shape=(n, n))
    S = sp.csr_array(A + A.T)
    S.sort_indices()
    S.indices, S.indptr = S.indices.astype(index_dtype), S.indptr.astype(index_dtype)
    assert is_symmetric(S)
    row = int(np.flatnonzero(np.diff(S.indptr) >= 2)[-1])
    lo = S.indptr[row]
    swapped = S.copy()  # two weights of one row exchanged: same pattern, same degrees
    swapped.data[[lo, lo + 1]] = swapped.data[[lo + 1, lo]]
    assert (swapped != swapped.T).nnz > 0
    assert not is_symmetric(swapped)


def _mapped_csr(A: sp.csr_array, folder) -> sp.csr_array:
    """``A``'s arrays saved to ``folder`` and opened read-only, memory-mapped."""
    arrays = []
    for name in ("data", "indices", "indptr"):
        np.save(folder / f"{name}.npy", getattr(A, name))
        arrays.append(np.load(folder / f"{name}.npy", mmap_mode="r"))
    return sp.csr_array(tuple(arrays), shape=A.shape, copy=False)


@pytest.mark.parametrize(
    "backbone, sampler",
    [
        ("gcn", "cluster"),
        ("gcn", "random"),
        ("sage", "random"),
        ("gin", "cluster"),
        ("gat", "random"),
    ],
)
def test_a_memory_mapped_adjacency_is_read_in_place(tmp_path, backbone, sampler):
    """An adjacency too large for memory stays on disk: a read-only float32 CSR in canonical
    form is used without a copy, and fits and predicts as the same graph in memory."""
    from skvqgnn import VQGNNClassifier
    from skvqgnn.datasets import make_csbm

    A, X, y, split = make_csbm(600, 3, avg_degree=6, n_features=8, random_state=0)
    mapped = _mapped_csr(sp.csr_array(A, dtype=np.float32), tmp_path)
    graph = Graph(mapped, X)
    for name in ("data", "indices", "indptr"):
        assert np.shares_memory(getattr(graph.A, name), getattr(mapped, name))
    labels = np.where(split.train_mask, y, -1)
    params = dict(backbone=backbone, sampler=sampler, batch_size=200, max_epochs=3, random_state=0)
    clf = VQGNNClassifier(**params).fit(graph.nodes(), labels)
    got = [clf.predict(graph.nodes()), clf.set_params(inference="exact").predict(graph.nodes())]
    ref = VQGNNClassifier(**params).fit(A, X, labels)
    np.testing.assert_array_equal(got[0], ref.predict(A, X))
    np.testing.assert_array_equal(got[1], ref.set_params(inference="exact").predict(A, X))


def test_an_adjacency_is_copied_unless_read_only_and_canonical(tmp_path):
    """Writable arrays are copied (the caller may change them later); read-only ones that
    `Graph` would change (unsorted rows, stored zeros, float64) are converted into a copy, and
    bad weights still raise."""
    A = sp.csr_array(np.array([[0, 2, 1], [2, 0, 0], [1, 0, 0]], dtype=np.float32))
    assert not np.shares_memory(Graph(A, np.ones((3, 1))).A.data, A.data)
    unsorted = A.copy()
    unsorted.indices[:2] = unsorted.indices[:2][::-1].copy()
    unsorted.data[:2] = unsorted.data[:2][::-1].copy()
    zero = A.copy()
    zero.data[0] = 0
    for case in (unsorted, zero, sp.csr_array(A, dtype=np.float64)):
        folder = tmp_path / str(id(case))
        folder.mkdir()
        mapped = _mapped_csr(case, folder)
        graph = Graph(mapped, np.ones((3, 1)))
        assert not np.shares_memory(graph.A.data, mapped.data)
        assert graph.A.has_canonical_format and graph.A.data.dtype == np.float32
        np.testing.assert_array_equal(graph.A.toarray(), case.toarray())
        assert graph.A.nnz == np.count_nonzero(case.toarray())
    negative = A.copy()
    negative.data[0] = -1
    folder = tmp_path / "negative"
    folder.mkdir()
    with pytest.raises(ValueError, match="negative edge weights"):
        Graph(_mapped_csr(negative, folder), np.ones((3, 1)))


@pytest.mark.parametrize("sampler", ["cluster", "random"])
def test_memory_mapped_features_are_read_in_place(tmp_path, sampler):
    """Features too large for memory stay on disk: a read-only ``numpy`` memory map is used
    without a copy, silently, and gives the predictions of the same features in memory."""
    import warnings

    from skvqgnn import VQGNNClassifier
    from skvqgnn.datasets import make_csbm

    A, X, y, split = make_csbm(600, 3, avg_degree=6, n_features=8, random_state=0)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    graph = Graph(A, mapped)
    assert np.shares_memory(graph.X, mapped)
    labels = np.where(split.train_mask, y, -1)
    params = dict(sampler=sampler, batch_size=200, max_epochs=3, random_state=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*not writable")
        got = VQGNNClassifier(**params).fit(graph.nodes(), labels).predict(graph.nodes())
    np.testing.assert_array_equal(got, VQGNNClassifier(**params).fit(A, X, labels).predict(A, X))


def test_repeated_ids_are_found_without_sorting_increasing_ones(monkeypatch):
    """`has_repeats` finds an id listed twice in any order; increasing ids (what a fit on
    ``graph.nodes()`` checks) cost a chunked pass, not the sorted copy of every id and the
    temporaries of ``np.unique`` (checked with tracemalloc, on chunks of 2¹⁶ ids)."""
    import tracemalloc

    import skvqgnn.graph

    monkeypatch.setattr(skvqgnn.graph, "_CHECK_VALUES", 1 << 16)
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 5, (1 << 16) + 1, 3 << 16):
        ids = np.sort(rng.choice(10 * n + 10, size=n, replace=False)).astype(np.int64)
        assert not has_repeats(ids) and not has_repeats(ids[::-1].copy())
        if n >= 2:
            for i in {0, (n - 2) // 2, n - 2, min(n - 2, 1 << 16)}:  # a chunk edge, inside
                twice = ids.copy()
                twice[i + 1] = twice[i]
                assert has_repeats(twice) and has_repeats(rng.permutation(twice))
    ids = np.arange(1 << 20, dtype=np.int64)
    tracemalloc.start()
    try:
        assert not has_repeats(ids)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < ids.nbytes / 8, f"{peak / ids.nbytes:.2f}x the ids"
