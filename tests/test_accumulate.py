"""``accumulate_batches``: an optimiser step takes the mean gradient of its group of batches."""

from unittest import mock

import numpy as np
import pytest
import torch

from skvqgnn import VQGNNClassifier, VQGNNLinkPredictor

from .conftest import random_graph

N, BATCH, EPOCHS = 150, 30, 2  # 5 batches an epoch


def _data():
    A = random_graph(N, 4.0, seed=5)
    rng = np.random.default_rng(5)
    X = rng.normal(size=(N, 6)).astype(np.float32)
    y = rng.integers(0, 3, N)
    return A, X, y


def _fit(estimator, accumulate):
    """Fit with the optimiser's step replaced by a recorder of the gradient it would apply;
    the parameters never move, so every run sees the same forward passes and codebooks."""
    A, X, y = _data()
    grads = []

    def record(self, closure=None):
        flat = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).clone()
            for group in self.param_groups
            for p in group["params"]
        ]
        grads.append(torch.cat(flat))

    params = dict(
        batch_size=BATCH,
        sampler="random",
        n_codewords=16,
        max_epochs=EPOCHS,
        accumulate_batches=accumulate,
        random_state=0,
    )
    with mock.patch.object(torch.optim.Adam, "step", record):
        if estimator == "classifier":
            VQGNNClassifier("sage", **params).fit(A, X, y)
        else:
            VQGNNLinkPredictor("sage", **params).fit(A, X)
    return grads


@pytest.mark.parametrize("estimator", ["classifier", "link"])
@pytest.mark.parametrize("accumulate", [2, "epoch"])
def test_a_step_takes_the_mean_gradient_of_its_batches(estimator, accumulate):
    per_batch = _fit(estimator, 1)
    n_batches = -(-N // BATCH)
    assert len(per_batch) == EPOCHS * n_batches
    group = n_batches if accumulate == "epoch" else accumulate
    expected = []
    for epoch in range(EPOCHS):
        grads = per_batch[epoch * n_batches : (epoch + 1) * n_batches]
        # the last group of an epoch takes the batches left (here 2, 2, 1)
        expected += [torch.stack(grads[i : i + group]).mean(0) for i in range(0, n_batches, group)]
    stepped = _fit(estimator, accumulate)
    assert len(stepped) == len(expected) == EPOCHS * -(-n_batches // group)
    for got, want in zip(stepped, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # control: the batches' gradients differ, so a step over one batch would not pass
    assert (per_batch[0] - expected[0]).abs().max() > 1e-4


def test_accumulation_is_inert_in_full_graph_mode():
    A, X, y = _data()
    fits = [
        VQGNNClassifier(
            "sage", batch_size=None, max_epochs=3, accumulate_batches=a, random_state=0
        ).fit(A, X, y)
        for a in (1, "epoch", 4)
    ]
    probs = [clf.predict_proba(A, X) for clf in fits]
    np.testing.assert_array_equal(probs[0], probs[1])
    np.testing.assert_array_equal(probs[0], probs[2])
