from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from skvqgnn.datasets import make_csbm

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def random_graph(n: int, avg_degree: float, seed: int, symmetric: bool = True) -> sp.csr_array:
    """A random sparse 0/1 adjacency without self-loops."""
    rng = np.random.default_rng(seed)
    m = int(n * avg_degree / 2)
    rows = rng.integers(0, n, m)
    cols = rng.integers(0, n, m)
    keep = rows != cols
    A = sp.csr_array((np.ones(keep.sum()), (rows[keep], cols[keep])), shape=(n, n))
    if symmetric:
        A = A + A.T
    A.data[:] = 1.0
    return A.tocsr()


@pytest.fixture(scope="session")
def csbm():
    """A small homophilous graph with learnable labels: (A, X, y, split)."""
    return make_csbm(
        n_nodes=600,
        n_classes=3,
        avg_degree=6,
        homophily=0.85,
        n_features=16,
        feature_noise=1.5,
        random_state=0,
    )
