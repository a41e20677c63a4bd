"""Train on a synthetic graph of 100 000 nodes in mini-batches, and report time and memory.

The graph (a contextual stochastic block model, 5 classes, average degree 10) is generated in a
fraction of a second. Training touches one batch of 4096 nodes per step, with the messages from
the rest of the graph taken from 128 codewords per slice; the graph, the convolutions and the
codeword assignments of all nodes stay in host memory. The peak memory printed is
``torch.cuda.max_memory_allocated`` on a GPU, the process's peak resident set size on the CPU.
"""

import resource
import time

import numpy as np
import torch

from skvqgnn import Graph, VQGNNClassifier
from skvqgnn.datasets import make_csbm


def peak_mib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    A, X, y, split = make_csbm(
        n_nodes=100_000, n_classes=5, n_features=32, feature_noise=1.5, random_state=0
    )
    G = Graph(A, X)
    print(f"{G}, {int(split.train_mask.sum())} training labels, device {device}")
    print(f"peak memory before fit {peak_mib(device):.0f} MiB")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    clf = VQGNNClassifier(
        batch_size=4096,
        n_codewords=128,
        max_epochs=2,
        learning_rate=0.01,
        # one optimiser step per batch (25 an epoch): with one hidden layer and METIS batches
        # this is stable, and 2 epochs are enough; the default, one step per epoch, is what
        # deeper networks and random batches need
        accumulate_batches=1,
        device=device,
        random_state=0,
    )
    start = time.perf_counter()
    clf.fit(G.nodes(), np.where(split.train_mask, y, -1))
    fit_time = time.perf_counter() - start
    epochs = ", ".join(f"{record['time']:.1f} s" for record in clf.history_)
    test_accuracy = np.mean(clf.transduction_[split.test_mask] == y[split.test_mask])
    print(
        f"fit {fit_time:.1f} s (epochs: {epochs}), relative VQ error {clf.vq_error_.round(3)}, "
        f"peak memory {peak_mib(device):.0f} MiB"
    )
    print(f"test accuracy {test_accuracy:.3f}")


if __name__ == "__main__":
    main()
