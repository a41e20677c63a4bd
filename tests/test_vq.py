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


def test_feature_ema_update_is_online_kmeans():
    cb = ProductCodebook(n_features=2, n_codewords=2, codeword_dim=2, n_grad=1, decay=0.5)
    x = torch.tensor([[[0.0, 0.0]], [[2.0, 2.0]], [[10.0, 10.0]]])  # (b=3, P=1, D=2)
    codes = torch.tensor([[0], [0], [1]])
    cb.update(x, codes)
    # N = 0.5 * 0 + 0.5 * count; S = 0.5 * sums
    assert torch.allclose(cb.counts, torch.tensor([[1.0, 0.5]]))
    assert torch.allclose(cb.feature_sums[0], torch.tensor([[1.0, 1.0], [5.0, 5.0]]))
    # codewords are the member means (up to Laplace smoothing)
    assert torch.allclose(cb.codewords[0], torch.tensor([[1.0, 1.0], [10.0, 10.0]]), atol=1e-3)
    # the gradient codebook is a separate one: untouched by a feature update
    assert torch.count_nonzero(cb.grad_sums) == 0 and torch.count_nonzero(cb.grad_counts) == 0
    # a second step moves them towards the new batch
    cb.update(x[:1], codes[:1])
    assert cb.codewords[0, 0, 0] < 1.0


def test_gradient_ema_update_averages_inputs_gradients_and_scalars():
    cb = ProductCodebook(n_features=2, n_codewords=2, codeword_dim=2, n_grad=1, decay=0.5, n_aux=1)
    x = torch.tensor([[[0.0, 0.0]], [[2.0, 2.0]], [[10.0, 10.0]]])
    g = torch.tensor([[[[1.0, 0.0]], [[3.0, 0.0]], [[5.0, 5.0]]]])  # (S=1, b, P, D)
    aux = torch.tensor([[1.0, 3.0, 7.0]])  # (n_aux, b)
    codes = torch.tensor([[0], [0], [1]])
    cb.update_gradients(x, g, codes, aux=aux)
    assert torch.allclose(
        cb.grad_codewords[0, 0], torch.tensor([[2.0, 0.0], [5.0, 5.0]]), atol=1e-3
    )
    assert torch.allclose(cb.grad_feature_codewords[0], torch.tensor([[1.0, 1.0], [10.0, 10.0]]))
    assert torch.allclose(cb.aux_codewords[0, 0], torch.tensor([2.0, 7.0]), atol=1e-3)
    assert torch.count_nonzero(cb.feature_sums) == 0  # the feature codebook is untouched


def test_laplace_smoothing_keeps_the_total():
    counts = torch.tensor([[3.0, 0.0, 1.0]])
    smoothed = laplace_smoothing(counts, 1e-5)
    assert torch.all(smoothed > 0)
    assert torch.allclose(smoothed.sum(), counts.sum())


def _two_words(grad_scale=10.0):
    cb = ProductCodebook(
        n_features=1, n_codewords=2, codeword_dim=1, n_grad=1, grad_scale=grad_scale
    )
    for sums in (cb.feature_sums, cb.grad_feature_sums):
        sums.copy_(torch.tensor([[[0.0], [0.1]]]))
    cb.grad_sums.copy_(torch.tensor([[[[5.0], [-5.0]]]]))
    cb.counts.fill_(1.0)
    cb.grad_counts.fill_(1.0)
    return cb


def test_feature_codes_ignore_gradients_and_gradient_codes_use_them():
    cb = _two_words()
    cb.grad_moments_set.fill_(True)
    x = torch.tensor([[[0.01]]])
    g = torch.tensor([[[[-5.0]]]])
    assert cb.assign(x).item() == 0  # features only: nearest is codeword 0
    assert cb.assign_gradients(x, g).item() == 1  # the gradient decides
    assert _two_words(grad_scale=0.0).assign_gradients(x, g).item() == 0


def test_gradient_codes_use_inputs_only_until_the_gradient_moments_are_set():
    cb = _two_words()
    x = torch.tensor([[[0.01]]])
    g = torch.tensor([[[[-5.0]]]])
    assert cb.assign_gradients(x, g).item() == 0  # grad_var still 1: the gradient is not used


def test_gradient_moments_start_from_the_first_batch():
    """After the first update the moments are the batch's own (within a factor 2, here exact),
    not 1: real gradient variances are 1e-8 to 1e-6."""
    cb = ProductCodebook(n_features=8, n_codewords=4, codeword_dim=4, n_grad=2, decay=0.99, n_aux=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, 4, generator=gen)
    g = 1e-4 * torch.randn(2, 50, 2, 4, generator=gen) + 3e-4
    aux = 1e-3 * torch.randn(3, 50, generator=gen)
    codes = torch.randint(4, (50, 2), generator=gen)
    weight = (torch.arange(50) % 5 != 0).float()  # rows 0, 5, ... have no known gradient
    cb.update_gradients(x, g, codes, weight, aux)
    rows = weight.bool()
    batch_var = g[:, rows].var(1)  # (S, P, D)
    ratio = cb.grad_var / batch_var
    assert torch.all((ratio > 0.5) & (ratio < 2.0))
    torch.testing.assert_close(cb.grad_var, batch_var)
    torch.testing.assert_close(cb.grad_mean, g[:, rows].mean(1))
    torch.testing.assert_close(cb.aux_var, aux[:, rows].var(1))
    assert bool(cb.grad_moments_set)
    # later updates are exponential moving averages
    cb.update_gradients(x, 10 * g, codes, weight, aux)
    expected = 0.99 * batch_var + 0.01 * (10 * g[:, rows]).var(1)
    torch.testing.assert_close(cb.grad_var, expected)


def test_a_batch_without_known_gradients_leaves_the_gradient_codebook_alone():
    cb = ProductCodebook(n_features=2, n_codewords=2, codeword_dim=2, n_grad=1, decay=0.5)
    x = torch.ones(3, 1, 2)
    g = torch.zeros(1, 3, 1, 2)
    codes = torch.zeros(3, 1, dtype=torch.long)
    state = {k: v.clone() for k, v in cb.state_dict().items()}
    cb.update_gradients(x, g, codes, weight=torch.zeros(3))
    cb.calibrate(g, codes, weight=torch.zeros(3))
    for k, v in cb.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_gradient_codewords_average_only_weighted_rows():
    cb = ProductCodebook(n_features=1, n_codewords=1, codeword_dim=1, n_grad=1, decay=0.0)
    x = torch.zeros(3, 1, 1)
    g = torch.tensor([[[[2.0]], [[4.0]], [[0.0]]]])
    codes = torch.zeros(3, 1, dtype=torch.long)
    cb.update_gradients(x, g, codes, weight=torch.tensor([1.0, 1.0, 0.0]))
    assert cb.grad_codewords.item() == pytest.approx(3.0)  # the zero row is left out
    cb.update_gradients(x, g, codes)
    assert cb.grad_codewords.item() == pytest.approx(2.0)  # by default every row counts


def test_trust_is_the_least_squares_scale_of_the_predictions():
    cb = ProductCodebook(n_features=2, n_codewords=2, codeword_dim=2, n_grad=2, decay=0.0)
    assert torch.equal(cb.grad_trust, torch.zeros(2))  # nothing measured: no backward messages
    cb.grad_sums.copy_(torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]], [[[1.0, 1.0], [1.0, 1.0]]]]))
    cb.grad_counts.fill_(1.0)
    codes = torch.tensor([[0], [1]])
    pred = cb.grad_codewords[:, 0, codes[:, 0]].unsqueeze(2)  # (S, b, P=1, D)
    # channel 0 measured at half its prediction, channel 1 at three times (clipped to 1)
    cb.calibrate(torch.stack([0.5 * pred[0], 3.0 * pred[1]]), codes)
    torch.testing.assert_close(cb.grad_trust, torch.tensor([0.5, 1.0]))
    cb.calibrate(-pred, codes)  # pointing the other way: no trust
    torch.testing.assert_close(cb.grad_trust, torch.tensor([0.0, 0.0]))


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


def test_seed_and_settle_make_codewords_the_member_means():
    cb = ProductCodebook(n_features=2, n_codewords=3, codeword_dim=2, n_grad=1)
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = (centres.repeat_interleave(20, 0) + 0.1 * torch.randn(60, 2, generator=gen)).unsqueeze(1)
    cb.seed(x.mean(0), x.var(0), x[::3], gen, 5)
    codes = cb.assign(x)
    count, sums = cb.member_sums(x, codes)
    cb.settle(count, sums, weight=0.25)
    assert torch.allclose(count.sum(), torch.tensor(60.0))
    for v in range(3):
        members = x[codes[:, 0] == v, 0]
        torch.testing.assert_close(cb.codewords[0, v], members.mean(0), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cb.counts, count * 0.25)
    # the gradient codewords start at the same places, with no gradient and a token mass
    torch.testing.assert_close(cb.grad_feature_codewords, cb.codewords, atol=1e-4, rtol=1e-4)
    assert float(cb.grad_counts.max()) < 1e-6 and torch.count_nonzero(cb.grad_sums) == 0


def test_reseed_replaces_only_dead_codewords():
    cb = ProductCodebook(n_features=4, n_codewords=3, codeword_dim=2)
    cb.feature_sums.fill_(7.0)
    cb.grad_feature_sums.fill_(7.0)
    cb.counts.fill_(1.0)
    cb.grad_counts.fill_(1.0)
    dead = torch.tensor([[False, True, False], [False, False, False]])
    x = torch.ones(5, 2, 2) * 3.0
    g = torch.ones(1, 5, 2, 2)
    gen = torch.Generator().manual_seed(0)
    assert cb.pick_reseeds(torch.zeros(2, 3, dtype=torch.bool), 5, gen) is None
    assert cb.pick_reseeds(dead, 0, gen) is None  # no row to re-seed from
    slice_idx, word_idx, rows = cb.pick_reseeds(dead, 5, gen)
    assert slice_idx.tolist() == [0] and word_idx.tolist() == [1] and 0 <= rows.item() < 5
    cb.reseed(slice_idx, word_idx, x[rows, slice_idx])
    assert torch.allclose(cb.codewords[0, 1], torch.tensor([3.0, 3.0]), atol=1e-3)
    assert torch.allclose(cb.codewords[0, 0], torch.tensor([7.0, 7.0]), atol=1e-3)
    assert torch.count_nonzero(cb.grad_sums) == 0  # the gradient side is re-seeded apart
    cb.reseed_gradients(
        slice_idx, word_idx, x[rows, slice_idx], g[:, rows, slice_idx], torch.zeros(0, 1)
    )
    assert torch.allclose(cb.grad_codewords[0, 0, 1], torch.ones(2), atol=1e-3)
    assert torch.allclose(cb.grad_feature_codewords[0, 1], torch.tensor([3.0, 3.0]), atol=1e-3)


def test_assignment_table_tracks_usage_of_both_codes():
    table = AssignmentTable(n_nodes=5, n_slices=2, n_codewords=4)
    assert table.codes.dtype == np.uint8 and table.grad_codes.dtype == np.uint8
    assert table.unused().sum() == 2 * 3
    changed = table.set(np.array([1, 3]), np.array([[2, 0], [2, 3]]))
    assert changed == 3
    assert table.usage.sum() == 10
    assert table.usage[0].tolist() == [3, 0, 2, 0]
    assert table.usage[1].tolist() == [4, 0, 0, 1]
    assert table.grad_usage[0].tolist() == [5, 0, 0, 0]  # gradient codes are apart
    table.set_gradients(np.array([0]), np.array([[3, 1]]))
    assert table.grad_unused()[0].tolist() == [False, True, True, False]
    assert table.grad_codes[0].tolist() == [3, 1] and table.codes[0].tolist() == [0, 0]
    assert AssignmentTable(3, 1, 40000).codes.dtype == np.uint16


def test_trust_is_zero_when_the_predictions_are_right_node_by_node_but_wrong_in_sum():
    """The measured gradients of the batch cancel in sum (what a weight gradient sees); the
    predictions are each close to them but share an offset: the node-by-node coefficient is
    near 1, the coefficient of the sums 0, and the trust the smaller."""
    cb = ProductCodebook(n_features=2, n_codewords=4, codeword_dim=2, n_grad=1, decay=0.0)
    cb.grad_decay = 0.0
    g = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])  # sums to 0
    offset = torch.tensor([0.0, 1.0])
    cb.grad_sums.copy_((g - offset).reshape(1, 1, 4, 2))  # one codeword per node
    cb.grad_counts.fill_(1.0)
    codes = torch.arange(4)[:, None]
    cb.calibrate(g.reshape(1, 4, 1, 2), codes)
    per_node, of_sums = (cb.trust_num / cb.trust_den)[:, 0].tolist()
    assert per_node == pytest.approx(400 / 404) and of_sums == pytest.approx(0.0)
    assert cb.grad_trust.item() == pytest.approx(0.0)
    cb.calibrate(g.reshape(1, 4, 1, 2) - offset, codes)  # now right in sum as well
    assert cb.grad_trust.item() == pytest.approx(1.0)


def test_assign_finds_the_nearest_codeword_of_every_slice_across_blocks():
    """``assign`` against a brute-force search, over more rows than one block of the search
    holds, with exact ties (the first codeword wins)."""
    torch.manual_seed(0)
    cb = ProductCodebook(n_features=15, n_codewords=40, codeword_dim=5)
    cb.feature_sums.copy_(torch.randn(3, 40, 5))
    cb.counts.fill_(1.0)
    cb.feature_var.fill_(1.0)
    cb.feature_sums[:, 7] = cb.feature_sums[:, 3]  # codewords 3 and 7 equal: a tie
    words = cb.codewords
    x = torch.randn(5000, 3, 5)
    x[:10] = words[:, 3].unsqueeze(0)  # rows exactly on the tied codewords
    brute = ((x.unsqueeze(2) - words.unsqueeze(0)) ** 2).sum(-1).argmin(-1)  # (m, P)
    codes = cb.assign(x)
    assert torch.equal(codes, brute)
    assert (codes[:10] == 3).all()


@pytest.mark.parametrize("k", [16, 300])  # uint8 and uint16 codes
def test_replace_recounts_the_usage_of_every_slice(k):
    rng = np.random.default_rng(0)
    table = AssignmentTable(1000, 3, k)
    codes = rng.integers(0, k, (1000, 3)).astype(table.codes.dtype)
    grads = rng.integers(0, k // 2, (1000, 3)).astype(table.codes.dtype)
    table.replace(codes, grads)
    for p in range(3):
        np.testing.assert_array_equal(table.usage[p], np.bincount(codes[:, p], minlength=k))
        np.testing.assert_array_equal(table.grad_usage[p], np.bincount(grads[:, p], minlength=k))
    assert np.array_equal(table.codes, codes) and np.array_equal(table.grad_codes, grads)
    assert table.grad_unused()[:, k // 2 :].all() and not table.unused().all()


def test_statistics_sum_every_slice_channel_and_scalar_under_its_own_code():
    # several slices, gradient channels and scalars: each sum must land on its own
    # (channel, slice, codeword), as an explicit loop over the rows puts it
    P, k, D, S, A, r = 3, 4, 2, 2, 2, 7
    cb = ProductCodebook(n_features=P * D, n_codewords=k, codeword_dim=D, n_grad=S, n_aux=A)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(r, P, D, generator=gen)
    g = torch.randn(S, r, P, D, generator=gen)
    aux = torch.randn(A, r, generator=gen)
    codes = torch.randint(k, (r, P), generator=gen)
    stats = cb.empty_statistics()
    cb.feature_statistics(stats, x, codes)
    cb.gradient_statistics(stats, x, g, codes, aux)
    counts = torch.zeros(P, k, dtype=torch.float64)
    sums = torch.zeros(P, k, D, dtype=torch.float64)
    gsums = torch.zeros(S, P, k, D, dtype=torch.float64)
    asums = torch.zeros(A, P, k, dtype=torch.float64)
    for i in range(r):
        for p in range(P):
            v = codes[i, p]
            counts[p, v] += 1
            sums[p, v] += x[i, p]
            gsums[:, p, v] += g[:, i, p]
            asums[:, p, v] += aux[:, i]
    for key, want in (("f.counts", counts), ("g.counts", counts)):
        torch.testing.assert_close(stats[key], want)
    for key, want in (("f.sums", sums), ("g.feature_sums", sums), ("g.sums", gsums)):
        torch.testing.assert_close(stats[key], want, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(stats["g.aux_sums"], asums, rtol=1e-6, atol=1e-6)
    count, member = cb.member_sums(x, codes)
    torch.testing.assert_close(count, counts.float())
    torch.testing.assert_close(member, sums.float())
    # the codewords each row is quantised to, and what its gradient codes predict
    cb.grad_sums.copy_(torch.randn(S, P, k, D, generator=gen))
    cb.grad_counts.fill_(1.0)
    picked = cb.pick(cb.grad_codewords, codes)
    for i in range(r):
        for p in range(P):
            torch.testing.assert_close(picked[:, i, p], cb.grad_codewords[:, p, codes[i, p]])
    torch.testing.assert_close(cb.lookup(codes)[3, D : 2 * D], cb.codewords[1, codes[3, 1]])
