import numpy as np
import pytest
import torch

from skvqgnn.vq import AssignmentTable, ProductCodebook, kmeans, laplace_smoothing


def test_split_and_merge_pad_the_last_slice():
    cb = ProductCodebook(n_features=10, n_codewords=3, codeword_dim=4)
    x = torch.arange(20.0).reshape(2, 10)
    parts = cb.split(x)
    assert parts.shape == (2, 3, 4)
    assert torch.equal(parts[:, 2, 2:], torch.zeros(2, 2))
    assert torch.equal(cb.merge(parts), x)


def test_ema_update_is_online_kmeans():
    cb = ProductCodebook(n_features=2, n_codewords=2, codeword_dim=2, n_grad=1, decay=0.5)
    x = torch.tensor([[[0.0, 0.0]], [[2.0, 2.0]], [[10.0, 10.0]]])  # (b=3, P=1, D=2)
    g = torch.tensor([[[[1.0, 0.0]], [[3.0, 0.0]], [[5.0, 5.0]]]])  # (S=1, b, P, D)
    codes = torch.tensor([[0], [0], [1]])
    cb.update(x, g, codes)
    # N = 0.5 * 0 + 0.5 * count; S = 0.5 * sums
    assert torch.allclose(cb.counts, torch.tensor([[1.0, 0.5]]))
    assert torch.allclose(cb.feature_sums[0], torch.tensor([[1.0, 1.0], [5.0, 5.0]]))
    # codewords are the member means (up to Laplace smoothing)
    assert torch.allclose(cb.codewords[0], torch.tensor([[1.0, 1.0], [10.0, 10.0]]), atol=1e-3)
    assert torch.allclose(
        cb.grad_codewords[0, 0], torch.tensor([[2.0, 0.0], [5.0, 5.0]]), atol=1e-3
    )
    # a second step moves them towards the new batch
    cb.update(x[:1], g[:, :1], codes[:1])
    assert cb.codewords[0, 0, 0] < 1.0


def test_laplace_smoothing_keeps_the_total():
    counts = torch.tensor([[3.0, 0.0, 1.0]])
    smoothed = laplace_smoothing(counts, 1e-5)
    assert torch.all(smoothed > 0)
    assert torch.allclose(smoothed.sum(), counts.sum())


def test_assignment_uses_gradients_when_asked():
    cb = ProductCodebook(n_features=1, n_codewords=2, codeword_dim=1, n_grad=1, grad_scale=10.0)
    cb.feature_sums.copy_(torch.tensor([[[0.0], [0.1]]]))
    cb.grad_sums.copy_(torch.tensor([[[[5.0], [-5.0]]]]))
    cb.counts.fill_(1.0)
    cb.grad_counts.fill_(1.0)
    x = torch.tensor([[[0.01]]])
    g = torch.tensor([[[[-5.0]]]])
    assert cb.assign(x).item() == 0  # features only: nearest is codeword 0
    assert cb.assign(x, g).item() == 1  # the gradient decides


def test_kmeans_recovers_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres.repeat_interleave(50, 0) + 0.1 * torch.randn(150, 2, generator=gen)).unsqueeze(0)
    centroids, codes = kmeans(x, 3, 5, gen)
    found = sorted(map(tuple, centroids[0].round().tolist()))
    assert found == sorted(map(tuple, centres.tolist()))
    assert len(torch.unique(codes[0, :50])) == 1


def test_kmeans_with_more_centroids_than_points():
    x = torch.randn(1, 5, 3)
    centroids, codes = kmeans(x, 8, 2, torch.Generator().manual_seed(0))
    assert centroids.shape == (1, 8, 3)
    assert torch.allclose(centroids[0, codes[0]], x[0])  # every point is its own centroid


def test_reseed_replaces_only_dead_codewords():
    cb = ProductCodebook(n_features=4, n_codewords=3, codeword_dim=2)
    cb.feature_sums.fill_(7.0)
    cb.counts.fill_(1.0)
    cb.grad_counts.fill_(1.0)
    dead = torch.tensor([[False, True, False], [False, False, False]])
    x = torch.ones(5, 2, 2) * 3.0
    g = torch.ones(1, 5, 2, 2)
    assert cb.reseed(dead, x, g, torch.Generator().manual_seed(0)) == 1
    assert torch.allclose(cb.codewords[0, 1], torch.tensor([3.0, 3.0]), atol=1e-3)
    assert torch.allclose(cb.codewords[0, 0], torch.tensor([7.0, 7.0]), atol=1e-3)
    assert torch.allclose(cb.grad_codewords[0, 0, 1], torch.ones(2), atol=1e-3)


def test_assignment_table_tracks_usage():
    table = AssignmentTable(n_nodes=5, n_slices=2, n_codewords=4)
    assert table.codes.dtype == np.uint8
    assert table.unused().sum() == 2 * 3
    changed = table.set(np.array([1, 3]), np.array([[2, 0], [2, 3]]))
    assert changed == 3
    assert table.usage.sum() == 10
    assert table.usage[0].tolist() == [3, 0, 2, 0]
    assert table.usage[1].tolist() == [4, 0, 0, 1]
    assert AssignmentTable(3, 1, 40000).codes.dtype == np.uint16


def test_gradient_codewords_average_only_weighted_rows():
    cb = ProductCodebook(n_features=1, n_codewords=1, codeword_dim=1, n_grad=1, decay=0.0)
    x = torch.zeros(3, 1, 1)
    g = torch.tensor([[[[2.0]], [[4.0]], [[0.0]]]])
    codes = torch.zeros(3, 1, dtype=torch.long)
    cb.update(x, g, codes, grad_weight=torch.tensor([1.0, 1.0, 0.0]))
    assert cb.grad_codewords.item() == pytest.approx(3.0)  # the zero row is left out
    cb.update(x, g, codes)
    assert cb.grad_codewords.item() == pytest.approx(2.0)  # by default every row counts
