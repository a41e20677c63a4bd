"""DESIGN §8: the tensors of one training step do not grow with n at fixed b and k."""

import numpy as np
import torch

from skvqgnn._base import GraphData, make_batch
from skvqgnn.datasets import make_csbm
from skvqgnn.graph import Graph
from skvqgnn.layers import BACKBONES
from skvqgnn.sketch import SketchBags
from skvqgnn.vq import AssignmentTable


def _step_elements(n: int, backbone: str, b: int = 200, k: int = 64, P: int = 4) -> int:
    A, X, _, _ = make_csbm(n, n_classes=4, avg_degree=6, n_features=8, random_state=0)
    data = GraphData(Graph(A, X), BACKBONES[backbone]())
    rng = np.random.default_rng(0)
    table = AssignmentTable(n, P, k)
    table.set(np.arange(n), rng.integers(0, k, size=(n, P)))
    nodes = np.sort(rng.choice(n, b, replace=False))
    batch = make_batch(data, nodes, [table], k, torch.device("cpu"), transposed=True)
    tensors = [*batch.inputs, *batch.intra]
    for level in (*batch.sketches, *batch.transposed):
        tensors.extend(level)
    total = 0
    for t in tensors:
        if t is None:
            continue
        if isinstance(t, SketchBags):  # a column and a weight per entry, an offset per row
            total += 2 * t.nnz + t.offsets.numel()
        else:
            total += t._nnz() * 3 if t.is_sparse else t.numel()  # COO: two indices + one value
    return total


def test_batch_tensors_do_not_grow_with_the_graph():
    for backbone in ("gcn", "sage"):
        small = _step_elements(2_000, backbone)
        large = _step_elements(50_000, backbone)
        assert large <= 1.2 * small, (backbone, small, large)
