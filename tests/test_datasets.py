import gzip
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from skvqgnn.datasets import (
    NodeDataset,
    NodeSplit,
    load_cora,
    load_edge_list_csv,
    load_ogb_node,
    load_planetoid,
    make_csbm,
    random_split,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_dir(name: str) -> Path:
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"shared dataset folder {path} is not available on this machine")
    return path


@pytest.fixture(scope="module")
def cora() -> NodeDataset:
    return load_cora()


@pytest.fixture(scope="module")
def citeseer() -> NodeDataset:
    return load_planetoid(shared_dir("citeseer"), "citeseer")


@pytest.fixture(scope="module")
def twitch() -> NodeDataset:
    return load_edge_list_csv(shared_dir("twitch-en"))


def n_undirected_edges(A: sparse.csr_array) -> int:
    return A.nnz // 2


def edge_homophily(A: sparse.csr_array, y: np.ndarray) -> float:
    row, col = A.nonzero()
    labelled = (y[row] >= 0) & (y[col] >= 0)
    return float(np.mean(y[row[labelled]] == y[col[labelled]]))


def assert_clean_adjacency(A: sparse.csr_array) -> None:
    assert isinstance(A, sparse.csr_array)
    assert A.dtype == np.float32
    assert A.shape[0] == A.shape[1]
    assert A.has_canonical_format  # sorted indices, no duplicate entries
    assert np.all(A.data == 1)
    assert A.diagonal().sum() == 0
    assert (A != A.T).nnz == 0


def assert_split_sizes(split: NodeSplit, sizes: tuple[int, int, int]) -> None:
    masks = (split.train_mask, split.val_mask, split.test_mask)
    assert tuple(int(mask.sum()) for mask in masks) == sizes
    assert np.sum(masks, axis=0).max() == 1


# --------------------------------------------------------------------------------------------
# Planetoid
# --------------------------------------------------------------------------------------------


def test_cora_sizes_and_public_split(cora):
    A, X, y, split = cora
    assert A.shape == (2708, 2708)
    assert n_undirected_edges(A) == 5278
    assert isinstance(X, sparse.csr_array) and X.dtype == np.float32
    assert X.shape == (2708, 1433)
    assert set(np.unique(X.data)) == {1.0}
    assert y.dtype == np.int64
    assert np.bincount(y).tolist() == [351, 217, 418, 818, 426, 298, 180]
    assert_split_sizes(split, (140, 500, 1000))
    np.testing.assert_array_equal(split.train_idx, np.arange(140))
    np.testing.assert_array_equal(split.val_idx, np.arange(140, 640))
    assert np.bincount(y[split.train_idx]).tolist() == [20] * 7


def test_cora_test_rows_follow_test_index_order(cora):
    # tx/ty row i belongs to the i-th node of test.index; placing it at the i-th *sorted* index
    # instead scrambles the test labels and drops the edge homophily to about 0.45.
    A, _, y, split = cora
    assert 0.80 < edge_homophily(A, y) < 0.82
    test_index = np.loadtxt(shared_dir("cora") / "ind.cora.test.index", dtype=np.int64)
    np.testing.assert_array_equal(split.test_idx, np.sort(test_index))


def test_bundled_cora_equals_shared_copy(cora):
    A, X, y, split = load_planetoid(shared_dir("cora"), "cora")
    assert (A != cora.A).nnz == 0
    assert (X != cora.X).nnz == 0
    np.testing.assert_array_equal(y, cora.y)
    for field in ("train_mask", "val_mask", "test_mask"):
        np.testing.assert_array_equal(getattr(split, field), getattr(cora.split, field))


def test_citeseer_sizes_and_missing_test_rows(citeseer):
    A, X, y, split = citeseer
    assert A.shape == (3327, 3327)
    assert n_undirected_edges(A) == 4552
    assert X.shape == (3327, 3703)
    assert np.bincount(y[y >= 0]).tolist() == [249, 590, 668, 701, 596, 508]
    # The 15 nodes missing from tx/ty: zero features, unknown label, in no mask.
    missing = np.flatnonzero(y == -1)
    assert missing.size == 15 and missing.min() >= 2312
    assert X[missing].nnz == 0
    assert_split_sizes(split, (120, 500, 1000))
    in_a_mask = split.train_mask | split.val_mask | split.test_mask
    assert not in_a_mask[missing].any()
    assert np.bincount(y[split.train_idx]).tolist() == [20] * 6
    assert 0.73 < edge_homophily(A, y) < 0.75


def test_planetoid_refuses_pickles_of_arbitrary_objects(tmp_path):
    for file in shared_dir("cora").iterdir():
        shutil.copy(file, tmp_path / file.name)

    class CallsAFunction:
        def __reduce__(self):
            return (os.getcwd, ())

    (tmp_path / "ind.cora.ty").write_bytes(pickle.dumps(CallsAFunction()))
    with pytest.raises(pickle.UnpicklingError, match="getcwd"):
        load_planetoid(tmp_path, "cora")


def test_planetoid_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="ind.cora"):
        load_planetoid(tmp_path, "cora")


@pytest.mark.parametrize("name", ["cora", "citeseer", "twitch"])
def test_loaded_adjacency_is_clean(name, request):
    assert_clean_adjacency(request.getfixturevalue(name).A)


# --------------------------------------------------------------------------------------------
# CSV edge lists
# --------------------------------------------------------------------------------------------


def test_twitch_en(twitch):
    A, X, y, split = twitch
    assert split is None
    assert A.shape == (7126, 7126)
    assert n_undirected_edges(A) == 35324
    assert isinstance(X, sparse.csr_array) and X.dtype == np.float32
    assert X.shape == (7126, 3170)
    # 148,218 triplets of value 1 of which 535 repeat a (node, feature) pair
    assert X.nnz == 148218 - 535
    assert set(np.unique(X.data)) == {1.0}
    assert y.dtype == np.int64
    assert np.bincount(y).tolist() == [3238, 3888]


def write_csv(path: Path, header: str, rows: list[tuple]) -> None:
    lines = [header] + [",".join(str(value) for value in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def tiny_csv(tmp_path) -> Path:
    write_csv(tmp_path / "edges.csv", "node_1,node_2", [(0, 1), (1, 0), (1, 2), (2, 2)])
    write_csv(
        tmp_path / "features.csv",
        "node_id,feature_id,value",
        [(0, 0, 1.0), (2, 3, 0.5), (2, 3, 2.0), (1, 1, 1.5)],
    )
    write_csv(tmp_path / "target.csv", "id,days,target", [(2, 10, 1), (0, 20, 0), (1, 30, 1)])
    return tmp_path


def test_edge_list_csv_contents(tiny_csv):
    A, X, y, split = load_edge_list_csv(tiny_csv)
    assert_clean_adjacency(A)
    np.testing.assert_array_equal(A.toarray(), [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    expected_X = np.zeros((3, 4), dtype=np.float32)
    expected_X[0, 0], expected_X[1, 1], expected_X[2, 3] = 1.0, 1.5, 2.0  # last duplicate wins
    np.testing.assert_array_equal(X.toarray(), expected_X)
    assert X.dtype == np.float32
    np.testing.assert_array_equal(y, [0, 1, 1])  # the 'target' column, rows placed by id
    assert split is None


def test_edge_list_csv_rejects_non_contiguous_ids(tiny_csv):
    write_csv(tiny_csv / "target.csv", "id,target", [(0, 0), (1, 1), (3, 1)])
    with pytest.raises(ValueError, match=r"target\.csv.*0\.\.2, each exactly once.*from 0 to 3"):
        load_edge_list_csv(tiny_csv)


def test_edge_list_csv_names_one_based_ids(tiny_csv):
    write_csv(tiny_csv / "target.csv", "id,target", [(1, 0), (2, 1), (3, 1)])
    with pytest.raises(ValueError, match=r"ids from 1 to 3\); they look 1-based"):
        load_edge_list_csv(tiny_csv)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("target.csv", "id,target\n0,a\n1,b\n2,a\n", r"target\.csv: every cell below the header"),
        ("features.csv", "node_id,feature_id,value\n", r"features\.csv: no data row"),
        ("edges.csv", "", r"edges\.csv: the file is empty"),
        ("target.csv", "id,target\n0\n1\n2\n", r"target\.csv: the header names 2 columns"),
    ],
)
def test_edge_list_csv_bad_files_name_the_file(tiny_csv, name, text, message):
    (tiny_csv / name).write_text(text)
    with pytest.raises(ValueError, match=message):
        load_edge_list_csv(tiny_csv)


def test_edge_list_csv_rejects_unknown_edge_ids(tiny_csv):
    write_csv(tiny_csv / "edges.csv", "node_1,node_2", [(0, 1), (1, 7)])
    with pytest.raises(ValueError, match=r"edges\.csv.*found 7"):
        load_edge_list_csv(tiny_csv)


def test_edge_list_csv_requires_target_column(tiny_csv):
    write_csv(tiny_csv / "target.csv", "id,days,views", [(0, 1, 2), (1, 1, 2), (2, 1, 2)])
    with pytest.raises(ValueError, match=r"target\.csv.*'target'"):
        load_edge_list_csv(tiny_csv)


# --------------------------------------------------------------------------------------------
# OGB
# --------------------------------------------------------------------------------------------


def write_gz_csv(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(str(value) for value in np.atleast_1d(row)) for row in rows]
    with gzip.open(path, "wt") as file:
        file.write("\n".join(lines) + "\n")


@pytest.fixture
def fake_ogb(tmp_path) -> Path:
    """A tiny copy of ogbn-products in OGB's on-disk layout (4 nodes, 3 features)."""
    folder = tmp_path / "ogbn_products"
    raw, split = folder / "raw", folder / "split" / "sales_ranking"
    write_gz_csv(raw / "edge.csv.gz", [(0, 1), (1, 2), (3, 2)])
    write_gz_csv(raw / "num-node-list.csv.gz", [4])
    write_gz_csv(raw / "num-edge-list.csv.gz", [3])
    write_gz_csv(raw / "node-feat.csv.gz", np.arange(12).reshape(4, 3) / 10)
    write_gz_csv(raw / "node-label.csv.gz", [2, 0, 1, "nan"])
    write_gz_csv(split / "train.csv.gz", [0, 1])
    write_gz_csv(split / "valid.csv.gz", [2])
    write_gz_csv(split / "test.csv.gz", [3])
    (folder / "RELEASE_v1.txt").touch()
    return tmp_path


def test_ogb_on_disk_copy(fake_ogb):
    for attempt in ("from raw files", "from ogb's processed cache"):
        A, X, y, split = load_ogb_node("ogbn-products", fake_ogb)
        assert_clean_adjacency(A)
        np.testing.assert_array_equal(
            A.toarray(), [[0, 1, 0, 0], [1, 0, 1, 0], [0, 1, 0, 1], [0, 0, 1, 0]], err_msg=attempt
        )
        assert isinstance(X, np.ndarray) and X.dtype == np.float32
        np.testing.assert_allclose(X, np.arange(12).reshape(4, 3) / 10, rtol=1e-6)
        np.testing.assert_array_equal(y, [2, 0, 1, -1])
        np.testing.assert_array_equal(split.train_idx, [0, 1])
        np.testing.assert_array_equal(split.val_idx, [2])
        np.testing.assert_array_equal(split.test_idx, [3])
        assert (fake_ogb / "ogbn_products" / "processed" / "data_processed").is_file()


def test_ogb_missing_copy_is_not_downloaded(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads") as error:
        load_ogb_node("ogbn-arxiv", tmp_path)
    assert str(tmp_path / "ogbn_arxiv") in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_ogb_incomplete_copy(fake_ogb):
    (fake_ogb / "ogbn_products" / "RELEASE_v1.txt").unlink()
    with pytest.raises(FileNotFoundError, match="RELEASE_v1.txt"):
        load_ogb_node("ogbn-products", fake_ogb)
    (fake_ogb / "ogbn_products" / "RELEASE_v1.txt").touch()
    (fake_ogb / "ogbn_products" / "raw" / "edge.csv.gz").unlink()
    with pytest.raises(FileNotFoundError, match="no download"):
        load_ogb_node("ogbn-products", fake_ogb)


def test_ogb_unknown_name(tmp_path):
    (tmp_path / "ogbn_nothing").mkdir()
    with pytest.raises(ValueError, match="Unknown OGB node dataset 'ogbn-nothing'"):
        load_ogb_node("ogbn-nothing", tmp_path)


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------


def test_node_split_validation():
    mask = np.array([True, False, False])
    with pytest.raises(ValueError, match="disjoint"):
        NodeSplit(mask, mask.copy(), ~mask)
    with pytest.raises(ValueError, match="boolean"):
        NodeSplit(mask.astype(int), ~mask, ~mask & mask)
    with pytest.raises(ValueError, match="same length"):
        NodeSplit(mask, np.zeros(2, dtype=bool), np.zeros(3, dtype=bool))


def test_random_split_stratified():
    y = np.repeat(np.arange(3), [100, 50, 30])
    y = np.concatenate([y, np.full(20, -1)])
    split = random_split(y, 0.6, 0.2, random_state=0)
    masks = (split.train_mask, split.val_mask, split.test_mask)
    assert np.sum(masks, axis=0).max() == 1
    np.testing.assert_array_equal(np.any(masks, axis=0), y >= 0)
    assert np.bincount(y[split.train_idx]).tolist() == [60, 30, 18]
    assert np.bincount(y[split.val_idx]).tolist() == [20, 10, 6]
    assert np.bincount(y[split.test_idx]).tolist() == [20, 10, 6]


def test_random_split_unstratified_and_determinism():
    y = np.repeat(np.arange(2), [900, 100])
    a = random_split(y, 0.5, 0.25, stratify=False, random_state=3)
    b = random_split(y, 0.5, 0.25, stratify=False, random_state=3)
    c = random_split(y, 0.5, 0.25, stratify=False, random_state=4)
    assert_split_sizes(a, (500, 250, 250))
    np.testing.assert_array_equal(a.train_mask, b.train_mask)
    np.testing.assert_array_equal(a.test_mask, b.test_mask)
    assert not np.array_equal(a.train_mask, c.train_mask)


@pytest.mark.parametrize(
    ("y", "kwargs", "message"),
    [
        (np.zeros((2, 2), dtype=int), {}, "one-dimensional integer"),
        (np.zeros(4), {}, "one-dimensional integer"),
        (np.array([0, -2]), {}, ">= 0, or -1"),
        (np.array([-1, -1]), {}, "no labelled node"),
        (np.arange(4), {"train_size": 0.0}, "0 < train_size"),
        (np.arange(4), {"train_size": 0.7, "val_size": 0.4}, "train_size \\+ val_size"),
        (np.arange(4), {"val_size": -0.1}, "val_size"),
    ],
)
def test_random_split_validation(y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        random_split(y, **kwargs)


# --------------------------------------------------------------------------------------------
# Contextual stochastic block model
# --------------------------------------------------------------------------------------------


def test_csbm_structure_and_split():
    A, X, y, split = make_csbm(2000, n_classes=4, n_features=16, random_state=0)
    assert_clean_adjacency(A)
    assert A.shape == (2000, 2000)
    assert isinstance(X, np.ndarray) and X.shape == (2000, 16) and X.dtype == np.float32
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [500] * 4
    assert_split_sizes(split, (1200, 400, 400))
    assert np.bincount(y[split.train_idx]).tolist() == [300] * 4


def test_csbm_is_deterministic():
    a = make_csbm(3000, random_state=7)
    b = make_csbm(3000, random_state=7)
    c = make_csbm(3000, random_state=8)
    assert (a.A != b.A).nnz == 0
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.split.train_mask, b.split.train_mask)
    assert not np.array_equal(a.y, c.y)
    assert (a.A != c.A).nnz > 0


@pytest.mark.parametrize("homophily", [0.0, 0.3, 0.8, 1.0])
def test_csbm_homophily_and_degree(homophily):
    A, _, y, _ = make_csbm(
        20_000, n_classes=5, avg_degree=8.0, homophily=homophily, n_features=2, random_state=1
    )
    assert abs(edge_homophily(A, y) - homophily) < 0.05
    assert abs(A.nnz / A.shape[0] - 8.0) < 0.8


def nearest_class_mean_accuracy(X: np.ndarray, y: np.ndarray) -> float:
    means = np.stack([X[y == c].mean(axis=0) for c in range(y.max() + 1)])
    distances = ((X[:, None, :] - means[None]) ** 2).sum(axis=-1)
    return float(np.mean(distances.argmin(axis=1) == y))


def test_csbm_feature_separability():
    _, X, y, _ = make_csbm(3000, n_classes=5, feature_noise=0.1, random_state=2)
    assert nearest_class_mean_accuracy(X, y) > 0.95
    _, X, y, _ = make_csbm(3000, n_classes=5, feature_noise=1.0, random_state=2)
    assert 0.2 + 0.15 < nearest_class_mean_accuracy(X, y) < 0.9  # informative, not trivial
    _, X, y, _ = make_csbm(30, n_classes=3, n_features=5, feature_noise=0.0, random_state=2)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)
    for c in range(3):
        assert np.ptp(X[y == c], axis=0).max() == 0


def test_csbm_accepts_generator_and_single_class():
    A, _, y, _ = make_csbm(
        500, n_classes=1, homophily=1.0, avg_degree=4.0, random_state=np.random.default_rng(0)
    )
    assert np.all(y == 0)
    assert A.nnz > 0


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"n_nodes": 0}, "n_nodes"),
        ({"n_nodes": 10.5}, "n_nodes"),
        ({"n_nodes": True}, "n_nodes"),
        ({"n_classes": 0}, "n_classes"),
        ({"n_nodes": 10, "n_classes": 11, "avg_degree": 2.0}, "n_classes"),
        ({"avg_degree": -1.0}, "avg_degree"),
        ({"n_nodes": 10, "avg_degree": 10.0}, "avg_degree"),
        ({"avg_degree": float("nan")}, "avg_degree"),
        ({"homophily": -0.1}, "homophily"),
        ({"homophily": 1.5}, "homophily"),
        ({"n_classes": 1, "homophily": 0.5}, "homophily"),
        ({"n_features": 0}, "n_features"),
        ({"feature_noise": -1.0}, "feature_noise"),
        ({"feature_noise": float("inf")}, "feature_noise"),
    ],
)
def test_csbm_argument_validation(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument} must"):
        make_csbm(**kwargs)
